"""Writes registration-v21.json: the 2.1 hub registration message and signature, computed
independently of the Rust code (Python's `cryptography` for Ed25519, `struct` for the
encoding of docs/SECURITY.md "Hub registration"). Run: python3 tests/data/registration-v21.py
"""
import base64, json, os, struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

LABEL = b"m2m/2.1 register"

def field(b):
    return struct.pack(">I", len(b)) + b

def message(nonce, public, address, caps):
    caps_field = struct.pack(">I", len(caps)) + b"".join(field(c.encode()) for c in caps)
    return LABEL + b"\0" + field(nonce.encode()) + field(public) + field(address.encode()) + field(caps_field)

cases = []
for seed_byte, nonce, address, caps in [
    (1, "00" * 32, "127.0.0.1:4001", []),
    (1, "00" * 32, "127.0.0.1:4001", [""]),
    (2, "ab" * 32, "10.0.0.1:4001", ["a", "b"]),
    (2, "ab" * 32, "10.0.0.1:4001", ["a\nb"]),
    (3, "0123456789abcdef" * 4, "", ["chat", "compute", "é"]),
]:
    seed = bytes([seed_byte]) * 32
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    msg = message(nonce, public, address, caps)
    cases.append({
        "seed_hex": seed.hex(),
        "identity_b64": base64.b64encode(public).decode(),
        "nonce": nonce,
        "address": address,
        "capabilities": caps,
        "message_hex": msg.hex(),
        "signature_b64": base64.b64encode(key.sign(msg)).decode(),
    })

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registration-v21.json")
with open(out, "w") as f:
    json.dump({"label": LABEL.decode(), "cases": cases}, f, indent=2, ensure_ascii=False)
    f.write("\n")
