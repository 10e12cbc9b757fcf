"""Triton kernels for infill: flash attention (training, packed documents, GQA) and KV-cache
extend/decode attention (serving), each with a plain-PyTorch reference.

This package imports only torch, triton and the standard library.
"""
from kernels.extend_attention import extend_attention
from kernels.flash_attention import flash_attention
from kernels.reference import attention_ref, extend_attention_ref

__all__ = ["flash_attention", "extend_attention", "attention_ref", "extend_attention_ref"]
