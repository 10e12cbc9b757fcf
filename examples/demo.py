import os


def read_lines(path):
    """Return the lines of a text file, without their line breaks."""
    with open(path) as f:
        return 


def count_words(text):
    return len(text.split())
