"""A RunPod serverless handler, unchanged from what runs on RunPod: reverses a text and counts its vowels with
a vowel set (its "weights", loaded at import from WEIGHTS, as a worker loads its model once)."""

import json
import os

import runpod

with open(os.environ.get("WEIGHTS", "/app/vowels.json")) as f:
    VOWELS = set(json.load(f))


def handler(job: dict) -> dict:
    """The job's input.text reversed, and its vowels counted."""
    text = job["input"].get("text")
    if not isinstance(text, str) or not text:
        raise ValueError("input.text must be a non-empty string")
    return {"reversed": text[::-1], "vowels": sum(ch in VOWELS for ch in text.lower())}


runpod.serverless.start({"handler": handler})
