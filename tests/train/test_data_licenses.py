"""Licenses: text classification, metadata, SPDX expressions, nearest-file lookup."""
from email.message import Message

import pytest

from train.data.config import DataConfig
from train.data.licenses import LicenseFinder, classify_text, filter_licenses, is_allowed, metadata_license

MIT = """MIT License\n\nCopyright (c) 2020 Someone\n\nPermission is hereby granted, free of charge,
to any person obtaining a copy of this software..."""
GPL3 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
 Copyright (C) 2007 Free Software Foundation, Inc."""
APACHE = """                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/"""
BSD3 = """Copyright (c) 2010, X\nRedistribution and use in source and binary forms, with or without
modification, are permitted... Neither the name of the copyright holder nor the names..."""
BSD2 = """Copyright (c) 2010, X\nRedistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met: 1. ... 2. ..."""
PSF = """PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2\n... GPL-compatible ... GNU General Public License"""


@pytest.mark.parametrize("text, spdx", [(MIT, "MIT"), (GPL3, "GPL-3.0"), (APACHE, "Apache-2.0"),
                                        (BSD3, "BSD-3-Clause"), (BSD2, "BSD-2-Clause"),
                                        (PSF, "PSF-2.0"), ("all rights reserved", "unknown")])
def test_classify_text(text, spdx):
    assert classify_text(text) == spdx


def test_metadata_license_sources():
    m = Message()
    m["License-Expression"] = "MIT OR Apache-2.0"
    assert metadata_license(m) == "MIT OR Apache-2.0"
    m = Message()
    m["License"] = "Apache 2.0 License"
    assert metadata_license(m) == "Apache-2.0"
    m = Message()
    m["Classifier"] = "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"
    assert metadata_license(m) == "GPL-3.0"
    assert metadata_license(Message()) == ""


def test_expressions():
    allowed = DataConfig().licenses
    assert is_allowed("MIT", allowed)
    assert is_allowed("mit", allowed)
    assert not is_allowed("GPL-3.0", allowed)
    assert is_allowed("GPL-3.0 OR MIT", allowed)
    assert not is_allowed("GPL-3.0 AND MIT", allowed)
    assert is_allowed("Apache-2.0 WITH LLVM-exception AND (BSD-3-Clause OR GPL-2.0)", allowed)
    assert not is_allowed("MIT AND (GPL-2.0 OR LGPL-2.1)", allowed)
    assert not is_allowed("unknown", allowed)
    assert is_allowed("unknown", allowed + ("unknown",))
    assert not is_allowed("MIT AND (", allowed)


def test_gpl_package_beside_mit_package(tmp_path):
    for name, text in [("mitpkg", MIT), ("gplpkg", GPL3)]:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "LICENSE").write_text(text)
        (tmp_path / name / "sub" / "mod.py").write_text("x = 1\n")
    (tmp_path / "mitpkg" / "vendored").mkdir()
    (tmp_path / "mitpkg" / "vendored" / "COPYING.txt").write_text(GPL3)
    (tmp_path / "mitpkg" / "vendored" / "v.py").write_text("y = 2\n")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "b.py").write_text("z = 3\n")

    def rec(pkg, rel, meta=""):
        return {"path": rel, "language": "python", "source": pkg, "license": meta, "bytes": 6,
                "text": "x", "_file": str(tmp_path / pkg / rel), "_license_root": str(tmp_path / pkg)}

    out = list(filter_licenses([rec("mitpkg", "sub/mod.py"), rec("gplpkg", "sub/mod.py"),
                                rec("mitpkg", "vendored/v.py"), rec("bare", "b.py"),
                                rec("bare", "b.py", meta="BSD-3-Clause")], DataConfig()))
    assert [(r["license"], r.get("removed")) for r in out] == [
        ("MIT", None), ("GPL-3.0", "license.not_allowed"), ("GPL-3.0", "license.not_allowed"),
        ("unknown", "license.unknown"), ("BSD-3-Clause", None)]


def test_dual_license_files_are_a_choice(tmp_path):
    (tmp_path / "LICENSE-MIT").write_text(MIT)
    (tmp_path / "LICENSE-GPL").write_text(GPL3)
    assert LicenseFinder().find(str(tmp_path / "a.rs"), str(tmp_path)) == "GPL-3.0 OR MIT"
    assert LicenseFinder().find(str(tmp_path / "a.rs"), "") is None
