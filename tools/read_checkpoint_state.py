#!/usr/bin/env python3
"""Reads a g2l-native checkpoint's state.safetensors with safetensors alone (no torch.load, no pickle), as a user
resuming or inspecting a run from Python would, and checks it against the student the run exported.

  read_checkpoint_state.py <checkpoints/step-N/state.safetensors> <exported student folder>

Prints one JSON line: every tensor's dtype, shape and the sha256 of its bytes (as safetensors.torch.load_file returns
it, little-endian), the metadata, step and seed, whether the data section's CRC-32 (zlib.crc32, the reference
implementation) equals the `data_crc32` in the metadata, and which student/<key> tensors differ from the export's
<key> (exported keys the checkpoint does not train, such as mask_token, are listed apart). Exits 1 when the checksum
or a student tensor disagrees. Run with the pinned libraries: .venv/bin/python tools/read_checkpoint_state.py ...
"""
import hashlib
import json
import os
import struct
import sys
import zlib

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def main():
    state_file, student_dir = sys.argv[1:3]
    state = load_file(state_file)
    with safe_open(state_file, framework="pt") as f:
        metadata = f.metadata() or {}
    with open(state_file, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    crc = "%08x" % (zlib.crc32(raw[8 + header_len :]) & 0xFFFFFFFF)

    tensors = {}
    for key, t in sorted(state.items()):
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        tensors[key] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "sha256": hashlib.sha256(data).hexdigest()}

    export = load_file(os.path.join(student_dir, "model.safetensors"))
    student = {k[len("student/") :]: v for k, v in state.items() if k.startswith("student/")}
    differ = sorted(k for k, v in student.items() if k not in export or not torch.equal(export[k], v))
    untrained = sorted(k for k in export if k not in student)
    ok = crc == metadata.get("data_crc32") and not differ and len(student) > 0
    print(json.dumps({
        "tensors": tensors,
        "metadata": metadata,
        "step": int(state["step"].item()),
        "seed": int(state["seed"].item()),
        "crc32": crc,
        "studentTensors": len(student),
        "studentDiffersFromExport": differ,
        "exportNotInCheckpoint": untrained,
        "ok": ok,
    }))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
