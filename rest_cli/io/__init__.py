"""Record I/O: JSONL streams (records), whole-or-nothing writes (atomic), resumable outputs, shards and seeds.

Nothing here imports torch or ctranslate2.
"""
