#!/usr/bin/python3
"""Checks contracts/vectors/*.json with a second implementation, written apart
from the TypeScript one: Debian's python3-nacl (libsodium: Ed25519,
XChaCha20-Poly1305) and python3-cryptography (OpenSSL: X25519, SHA-256), plus
a pure-Python BLAKE3 below (Debian ships no BLAKE3 module), itself checked
against the official BLAKE3 test vectors first. Every byte layout (envelope,
frame, sealed box, share set, Merkle tree, statements, membership log,
replica handshake) is rebuilt here from the specs in contracts/specs, not
read from the vectors.

Prints a line per group and "N passed, N failed"; exits 1 on any failure.
With --report FILE it also writes the counts in the shape of a vitest JSON
report, so CI sums them with the other suites.
Run: /usr/bin/python3 contracts/vectors/check.py  (or npm run vectors:check)
"""
import base64
import hashlib
import json
import os
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives import serialization
import nacl.bindings as sodium
from nacl.signing import SigningKey, VerifyKey
from nacl.exceptions import BadSignatureError

HERE = os.path.dirname(os.path.abspath(__file__))
passed = 0
failed = 0


def check(what, ok):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}")


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return json.load(f)


h = bytes.fromhex
sha256 = lambda b: hashlib.sha256(b).digest()

# --- BLAKE3 (the reference implementation's structure, in Python) -----------
IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
CHUNK_START, CHUNK_END, PARENT, ROOT, KEYED_HASH, DERIVE_KEY_CONTEXT, DERIVE_KEY_MATERIAL = 1, 2, 4, 8, 16, 32, 64
M32 = 0xFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & M32


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & M32
    s[d] = _rotr(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotr(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b] + y) & M32
    s[d] = _rotr(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotr(s[b] ^ s[c], 7)


def _compress(cv, m, counter, block_len, flags):
    s = list(cv) + IV[:4] + [counter & M32, (counter >> 32) & M32, block_len, flags]
    m = list(m)
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1]); _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5]); _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9]); _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13]); _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in PERM]
    for i in range(8):
        s[i] ^= s[i + 8]
        s[i + 8] ^= cv[i]
    return s


def _words(b):
    return list(struct.unpack("<16I", b.ljust(64, b"\0")))


class _Output:
    def __init__(self, cv, block, counter, block_len, flags):
        self.cv, self.block, self.counter, self.block_len, self.flags = cv, block, counter, block_len, flags

    def chaining_value(self):
        return _compress(self.cv, self.block, self.counter, self.block_len, self.flags)[:8]

    def root_bytes(self, n):
        out, i = b"", 0
        while len(out) < n:
            out += struct.pack("<16I", *_compress(self.cv, self.block, i, self.block_len, self.flags | ROOT))
            i += 1
        return out[:n]


class _Chunk:
    def __init__(self, key, counter, flags):
        self.cv, self.counter, self.flags, self.block, self.blocks, self.length = list(key), counter, flags, b"", 0, 0

    def _start(self):
        return CHUNK_START if self.blocks == 0 else 0

    def update(self, data):
        while data:
            if len(self.block) == 64:
                self.cv = _compress(self.cv, _words(self.block), self.counter, 64, self.flags | self._start())[:8]
                self.blocks += 1
                self.block = b""
            take = min(64 - len(self.block), len(data))
            self.block += data[:take]
            self.length += take
            data = data[take:]

    def output(self):
        return _Output(self.cv, _words(self.block), self.counter, len(self.block), self.flags | self._start() | CHUNK_END)


def _blake3(data, key=IV, flags=0, n=32):
    chunk, stack = _Chunk(key, 0, flags), []
    while data:
        if chunk.length == 1024:
            cv, total = chunk.output().chaining_value(), chunk.counter + 1
            while total & 1 == 0:
                cv = _Output(key, stack.pop() + cv, 0, 64, PARENT | flags).chaining_value()
                total >>= 1
            stack.append(cv)
            chunk = _Chunk(key, chunk.counter + 1, flags)
        take = min(1024 - chunk.length, len(data))
        chunk.update(data[:take])
        data = data[take:]
    out = chunk.output()
    for cv in reversed(stack):
        out = _Output(key, cv + out.chaining_value(), 0, 64, PARENT | flags)
    return out.root_bytes(n)


def blake3_hash(data, n=32):
    return _blake3(data, n=n)


def blake3_keyed(key, data, n=32):
    return _blake3(data, list(struct.unpack("<8I", key)), KEYED_HASH, n)


def blake3_derive(context, material, n=32):
    ctx_key = _blake3(context.encode(), IV, DERIVE_KEY_CONTEXT, 32)
    return _blake3(material, list(struct.unpack("<8I", ctx_key)), DERIVE_KEY_MATERIAL, n)


# --- primitives -----------------------------------------------------------------
def ed_public(seed):
    return bytes(SigningKey(seed).verify_key)


def ed_sign(seed, msg):
    return SigningKey(seed).sign(msg).signature


def ed_verify(pub, msg, sig):
    try:
        VerifyKey(pub).verify(msg, sig)
        return True
    except BadSignatureError:
        return False


def x25519_public(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519_shared(secret, peer):
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer))


def xchacha_encrypt(key, nonce, plaintext, ad):
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def xchacha_decrypt(key, nonce, ciphertext, ad):
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def nkey_public(prefix_char, pub):
    raw = bytes([(ord(prefix_char) - ord("A")) << 3]) + pub
    return base64.b32encode(raw + struct.pack("<H", crc16(raw))).decode().rstrip("=")


def principal(pub):
    return nkey_public("U", pub)


def principal_key(p):
    raw = base64.b32decode(p + "=" * (-len(p) % 8))
    assert crc16(raw[:-2]) == struct.unpack("<H", raw[-2:])[0], "bad nkey checksum"
    return raw[1:-2]


MARKER = b"\xff"


def F(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def lp(b):
    return bytes([len(b)]) + b


# --- the vectors ----------------------------------------------------------------
def check_blake3_official():
    o = load("replica-handshake.json")["blake3Official"]
    check("blake3 hash(empty)", blake3_hash(b"").hex() == o["hash"])
    check("blake3 keyed_hash(empty)", blake3_keyed(h(o["key"]), b"").hex() == o["keyedHash"])
    check("blake3 derive_key(empty)", blake3_derive(o["context"], b"").hex() == o["deriveKey"])
    # Official vectors past one block, one chunk and two chunks (input = i % 251), first 32 bytes.
    data = bytes(i % 251 for i in range(2049))
    check("blake3 hash(1023 bytes)", blake3_hash(data[:1023]).hex() == "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11")
    check("blake3 hash(2049 bytes)", blake3_hash(data).hex() == "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030")


def check_ed25519():
    v = load("ed25519.json")
    for c in v["cases"]:
        seed, pub = h(c["seed"]), h(c["publicKey"])
        check(f"ed25519 {c['name']}: public key", ed_public(seed) == pub)
        check(f"ed25519 {c['name']}: signature", ed_sign(seed, h(c["message"])).hex() == c["signature"])
        check(f"ed25519 {c['name']}: principal", principal(pub) == c["principal"] and nkey_public("A", pub) == c["nkeyAccountPublic"])
    a = v["nkeyAuth"]
    pub = principal_key(a["nkey"])
    check("nkey connect signature over utf8(nonce)", ed_verify(pub, a["nonce"].encode(), base64.b64decode(a["sig"])))


def check_x25519():
    for c in load("x25519.json")["cases"]:
        sk = h(c["secretKey"])
        check(f"x25519 {c['name']}: public", x25519_public(sk).hex() == c["publicKey"])
        check(f"x25519 {c['name']}: shared", x25519_shared(sk, h(c["peerPublicKey"])).hex() == c["shared"])


def check_aead():
    for c in load("xchacha20poly1305.json")["cases"]:
        ad = h(c["associatedData"]) if "associatedData" in c else None
        check(f"xchacha20poly1305 {c['name']}", xchacha_encrypt(h(c["key"]), h(c["nonce"]), h(c["plaintext"]), ad).hex() == c["ciphertext"])


def check_envelope():
    v = load("envelope.json")
    seed = h(v["seed"])
    for c in v["cases"]:
        e = c["envelope"]
        subject, nonce = c["subject"].encode(), e["nonce"].encode()
        signing = MARKER + lp(b"unibus-envelope-v1") + struct.pack(">I", len(subject)) + subject + struct.pack(">Q", e["timestamp"]) + lp(nonce) + sha256(h(c["body"]))
        check(f"envelope {c['name']}: signing bytes (0xFF marker first)", signing.hex() == c["signingBytes"])
        sig = base64.urlsafe_b64decode(e["signature"] + "==")
        check(f"envelope {c['name']}: signature", ed_verify(ed_public(seed), signing, sig) and principal(ed_public(seed)) == e["signer"])


def seal_parts(rsk_pub, esk, plaintext):
    epk = x25519_public(esk)
    shared = x25519_shared(esk, rsk_pub)
    okm = blake3_derive("unibus 2026-11-23 sealed-box v1", shared + epk + rsk_pub, 56)
    header = b"\x01" + epk
    return shared, okm, header + xchacha_encrypt(okm[:32], okm[32:], plaintext, header)


def check_sealed_box():
    v = load("sealed-box.json")
    for c in v["cases"]:
        rpk = x25519_public(h(c["recipientSecretKey"]))
        shared, okm, sealed = seal_parts(rpk, h(c["ephemeralSecretKey"]), h(c["plaintext"]))
        i = c["intermediate"]
        check(f"sealed box {c['name']}: kdf", shared.hex() == i["shared"] and okm[:32].hex() == i["key"] and okm[32:].hex() == i["nonce"])
        check(f"sealed box {c['name']}: sealed bytes", sealed.hex() == c["sealed"])
        # And the recipient's side: open it with the recipient's secret.
        epk = h(c["sealed"])[1:33]
        okm2 = blake3_derive("unibus 2026-11-23 sealed-box v1", x25519_shared(h(c["recipientSecretKey"]), epk) + epk + rpk, 56)
        check(f"sealed box {c['name']}: opens", xchacha_decrypt(okm2[:32], okm2[32:], h(c["sealed"])[33:], h(c["sealed"])[:33]).hex() == c["plaintext"])
    m = v["multiRecipient"]
    for j, r in enumerate(m["recipients"]):
        _, _, sealed = seal_parts(h(r["recipientPublicKey"]), h(m["ephemeralSecretKey"]), h(m["plaintext"]))
        check(f"sealed box many recipients #{j}", sealed.hex() == r["sealed"])


def check_frames():
    for c in load("frames.json")["cases"]:
        seed, key, nonce = h(c["senderSeed"]), h(c["key"]), h(c["nonce"])
        msgs = [h(m) for m in c["messages"]]
        room = c["roomId"].encode()
        version = c["version"]
        header = bytes([version, len(room)]) + room + struct.pack(">I", c["epoch"]) + ed_public(seed) + struct.pack(">QH", c["counter"], len(msgs)) + nonce
        plaintext = b"".join(struct.pack(">I", len(m)) + m for m in msgs)
        check(f"frame {c['name']}: header", header.hex() == c["header"] and plaintext.hex() == c["plaintext"])
        frame = h(c["frame"])
        body = frame[len(header):-64]
        check(f"frame {c['name']}: body decrypts with header as AD", xchacha_decrypt(key, nonce, body, header) == plaintext)
        # v2 signs SHA-256 of the body, v1 the body itself; neither verifies as the other.
        signed = {1: b"unibus-room-frame-v1" + header + body, 2: b"unibus-room-frame-v2" + header + hashlib.sha256(body).digest()}
        other = {1: b"unibus-room-frame-v2" + header + hashlib.sha256(body).digest(), 2: b"unibus-room-frame-v1" + header + body}
        check(f"frame {c['name']}: v{version} signature over 0xFF || label || header || body statement", ed_verify(ed_public(seed), MARKER + signed[version], frame[-64:]))
        check(f"frame {c['name']}: no signature without the marker", not ed_verify(ed_public(seed), signed[version], frame[-64:]))
        check(f"frame {c['name']}: not a signature of the other version", not ed_verify(ed_public(seed), MARKER + other[version], frame[-64:]))
        if version == 2:
            check(f"frame {c['name']}: body digest", hashlib.sha256(body).hexdigest() == c["bodyDigest"])


def merkle_levels(leaves):
    levels = [leaves]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([sha256(b"\x01" + prev[i] + prev[i + 1]) if i + 1 < len(prev) else prev[i] for i in range(0, len(prev), 2)])
    return levels


def root_from_proof(leaf, index, n, proof):
    node, i, used = leaf, index, 0
    while n > 1:
        if not (i == n - 1 and n % 2 == 1):
            if used >= len(proof):
                return None
            sib = proof[used]
            used += 1
            node = sha256(b"\x01" + node + sib) if i % 2 == 0 else sha256(b"\x01" + sib + node)
        i >>= 1
        n = (n + 1) // 2
    return node if used == len(proof) else None


def check_share_set():
    v = load("share-set.json")
    for c in v["agreement"]:
        pub = ed_public(h(c["seed"]))
        statement = MARKER + F("unibus-agreement-key-v1") + F(principal(pub)) + h(c["agreementKey"])
        check(f"agreement statement {c['principal'][:8]}: bytes", statement.hex() == c["statement"] and principal(pub) == c["principal"])
        check(f"agreement statement {c['principal'][:8]}: signature", ed_verify(pub, statement, h(c["signature"])))
        # The statement is not UTF-8, so no connect nonce string can encode to it.
        try:
            statement.decode("utf-8")
            check("agreement statement is not UTF-8", False)
        except UnicodeDecodeError:
            check("agreement statement is not UTF-8", True)
    dpub = ed_public(h(v["distributorSeed"]))
    check("share set distributor principal", principal(dpub) == v["distributor"])
    for c in v["shareSets"]:
        name = f"share set {c['roomId']} epoch {c['epoch']}"
        members = c["members"]
        check(f"{name}: members sorted", [m["principal"] for m in members] == sorted(m["principal"] for m in members))
        leaves = [sha256(b"\x00" + F(m["principal"]) + (b"\x01" + sha256(h(m["sealedShare"])) if "sealedShare" in m else b"\x00")) for m in members]
        check(f"{name}: leaves", [l.hex() for l in leaves] == c["leaves"])
        levels = merkle_levels(leaves)
        root = levels[-1][0]
        check(f"{name}: root", root.hex() == c["root"])
        for i, leaf in enumerate(leaves):
            proof, j = [], i
            for level in levels[:-1]:
                if (j ^ 1) < len(level):
                    proof.append(level[j ^ 1])
                j >>= 1
            check(f"{name}: proof {i}", [p.hex() for p in proof] == c["proofs"][i] and root_from_proof(leaf, i, len(leaves), proof) == root)
            if len(leaves) > 1:
                check(f"{name}: proof {i} does not move", root_from_proof(leaf, (i + 1) % len(leaves), len(leaves), proof) != root)
        # The recipients hash binds the set to the membership at its log position.
        recipients = sha256("\n".join(m["principal"] for m in members).encode())
        check(f"{name}: recipients hash", recipients.hex() == c["recipients"])
        tail = struct.pack(">Q", c["logSeq"]) + h(c["logHead"]) + recipients
        statement = MARKER + F("unibus-room-epoch-v1") + F(c["roomId"]) + struct.pack(">Q", c["epoch"]) + F(v["distributor"]) + struct.pack(">Q", len(members)) + root + tail
        check(f"{name}: statement (0xFF marker, log position, head, recipients)", statement.hex() == c["statement"])
        check(f"{name}: signature", ed_verify(dpub, statement, h(c["signature"])))
        check(f"{name}: no signature without the log fields", not ed_verify(dpub, statement[: -len(tail)], h(c["signature"])))


def b64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def lf(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def log_entry_hash(e):
    return sha256(
        lf("unibus-room-log-v1") + struct.pack(">Q", e["seq"]) + b64u(e["prev"]) + lf(e["roomId"]) + lf(e["op"]) + lf(e["subject"]) + lf(b64u(e["body"]))
        + lf(e["signer"]) + struct.pack(">Q", e["timestamp"]) + lf(e["nonce"]) + lf(e["signature"]) + lf(e["target"]) + lf(e.get("role", "")) + lf(e.get("actorRole", ""))
    )


def check_membership_log():
    v = load("membership-log.json")
    entries = v["entries"]
    check("membership log: room id derived from the create signature", sha256(lf("unibus-room-id-v1") + b64u(entries[0]["signature"])).hex()[:24] == v["roomId"])
    prev = bytes(32)
    members = {}
    for i, e in enumerate(entries):
        name = f"membership log entry {i} ({e['op']})"
        check(f"{name}: seq, room and chain to the entry before", e["seq"] == i and e["roomId"] == v["roomId"] and b64u(e["prev"]) == prev)
        prev = log_entry_hash(e)
        check(f"{name}: entry hash", prev.hex() == v["hashes"][i])
        # The actor's own request: its envelope signature over 0xFF || the envelope signing bytes.
        subject, nonce = e["subject"].encode(), e["nonce"].encode()
        signing = lp(b"unibus-envelope-v1") + struct.pack(">I", len(subject)) + subject + struct.pack(">Q", e["timestamp"]) + lp(nonce) + sha256(b64u(e["body"]))
        pub = principal_key(e["signer"])
        check(f"{name}: actor signature over the marked envelope", ed_verify(pub, MARKER + signing, b64u(e["signature"])))
        check(f"{name}: no actor signature without the marker", not ed_verify(pub, signing, b64u(e["signature"])))
        if e["op"] in ("create", "invite"):
            members[e["target"]] = e["role"]
        else:
            members.pop(e["target"], None)
        check(f"{name}: members after", sorted(members) == v["membersAfter"][i])


def check_replica_handshake():
    v = load("replica-handshake.json")
    ctx = v["contexts"]
    for c in v["cases"]:
        name = f"replica handshake {c['name']}"
        cluster_id = blake3_derive(ctx["clusterId"], c["clusterName"].encode(), 16)
        mac_key = blake3_derive(ctx["macKey"], h(c["psk"]))
        key_id = blake3_derive(ctx["keyId"], h(c["psk"]), 8)
        seed = h(c["identitySeed"])
        identity = ed_public(seed)
        check(f"{name}: derived ids", cluster_id.hex() == c["clusterId"] and mac_key.hex() == c["macKey"] and key_id.hex() == c["keyId"] and identity.hex() == c["identity"])
        common = lp(b"unibus replica-handshake mac v1") + cluster_id + lp(c["dialerId"].encode()) + lp(c["acceptorId"].encode()) + h(c["nonceD"]) + h(c["nonceA"])
        mac_a = blake3_keyed(mac_key, common + b"\x01")
        mac_d = blake3_keyed(mac_key, common + b"\x02" + identity)
        check(f"{name}: macs", mac_a.hex() == c["macA"] and mac_d.hex() == c["macD"])
        transcript = lp(b"unibus replica-handshake transcript v1") + cluster_id + lp(c["dialerId"].encode()) + lp(c["acceptorId"].encode()) + h(c["nonceD"]) + h(c["nonceA"]) + mac_a + mac_d + identity
        check(f"{name}: transcript", transcript.hex() == c["transcript"])
        check(f"{name}: signature over 0xFF || transcript", ed_verify(identity, MARKER + transcript, h(c["signature"])))
        check(f"{name}: session id", blake3_derive(ctx["sessionId"], transcript, 16).hex() == c["sessionId"])
        expiry = int.from_bytes(h(c["nonceA"])[:8], "big")
        check(f"{name}: nonce_a expiry (u64 big-endian ms)", c["nonceAExpiresAt"] == (expiry if expiry <= 2**53 - 1 else None))
        check_replica_wire(name, c, cluster_id, key_id, identity, mac_key, ctx)
    statuses = v["statuses"]
    for r in v["rejects"]:
        check(f"replica handshake reject {r['status']}", parse_replica_status(h(r["bytes"])) == statuses[r["status"]] != 0)
    for m in v["malformed"]:
        parse = parse_replica_hello if m["message"] == "hello" else parse_replica_finish
        check(f"replica handshake refuses {m['what']}", parse(h(m["bytes"])) == statuses[m["status"]])


# The binary layout of the handshake's messages (replica-handshake.md, Messages),
# parsed here from the spec: version byte 1 first, fixed fields, then
# length-prefixed ids of 1-63 bytes of [a-z0-9._-] starting alphanumeric, and
# nothing after them. A parse error is the status the acceptor answers.
UNKNOWN_COMMAND, MALFORMED = 1, 7


def replica_id_ok(b):
    return 1 <= len(b) <= 63 and all(ch in b"abcdefghijklmnopqrstuvwxyz0123456789._-" for ch in b) and b[:1].isalnum()


def take_id(d, at):
    if at >= len(d):
        return None
    n = d[at]
    ident = d[at + 1:at + 1 + n]
    if len(ident) != n or not replica_id_ok(ident):
        return None
    return ident.decode("ascii"), at + 1 + n


def parse_replica_hello(d):
    if len(d) == 0:
        return MALFORMED
    if d[0] != 1:
        return UNKNOWN_COMMAND
    got = take_id(d, 57)
    if got is None or got[1] != len(d):
        return MALFORMED
    return {"clusterId": d[1:17], "keyId": d[17:25], "nonceD": d[25:57], "replicaId": got[0]}


def parse_replica_finish(d):
    if len(d) == 0:
        return MALFORMED
    if d[0] != 1:
        return UNKNOWN_COMMAND
    replica = take_id(d, 217)
    acceptor = take_id(d, replica[1]) if replica is not None else None
    if acceptor is None or acceptor[1] != len(d):
        return MALFORMED
    fields = {"clusterId": (1, 17), "keyId": (17, 25), "nonceD": (25, 57), "nonceA": (57, 89), "identity": (89, 121), "macD": (121, 153), "signature": (153, 217)}
    out = {k: d[a:b] for k, (a, b) in fields.items()}
    out.update(replicaId=replica[0], acceptorId=acceptor[0])
    return out


def parse_replica_status(d):
    return d[1] if len(d) == 2 and d[0] == 1 else None


def parse_replica_challenge(d):
    if len(d) < 2 or d[0] != 1 or d[1] != 0:
        return None
    got = take_id(d, 66)
    if got is None or got[1] != len(d):
        return None
    return {"nonceA": d[2:34], "macA": d[34:66], "acceptorId": got[0]}


def parse_replica_finish_reply(d):
    if len(d) != 34 or d[0] != 1 or d[1] != 0:
        return None
    created, expires = struct.unpack(">QQ", d[18:34])
    return {"sessionId": d[2:18], "createdAt": created, "expiresAt": expires}


def check_replica_wire(name, c, cluster_id, key_id, identity, mac_key, ctx):
    w = c["wire"]
    hello = parse_replica_hello(h(w["hello"]))
    check(f"{name}: hello bytes", isinstance(hello, dict) and hello == {"clusterId": cluster_id, "keyId": key_id, "nonceD": h(c["nonceD"]), "replicaId": c["dialerId"]})
    challenge = parse_replica_challenge(h(w["challenge"]))
    check(f"{name}: challenge bytes", challenge == {"nonceA": h(c["nonceA"]), "macA": h(c["macA"]), "acceptorId": c["acceptorId"]})
    f = parse_replica_finish(h(w["finish"]))
    ok = isinstance(f, dict) and f["clusterId"] == cluster_id and f["keyId"] == key_id and f["identity"] == identity and f["replicaId"] == c["dialerId"] and f["acceptorId"] == c["acceptorId"]
    check(f"{name}: finish bytes", ok and f["nonceD"] == h(c["nonceD"]) and f["nonceA"] == h(c["nonceA"]))
    # What an acceptor does with the finish's bytes alone: rebuild the MAC input and transcript from its fields, check both proofs.
    common = lp(b"unibus replica-handshake mac v1") + f["clusterId"] + lp(f["replicaId"].encode()) + lp(f["acceptorId"].encode()) + f["nonceD"] + f["nonceA"]
    mac_a = blake3_keyed(mac_key, common + b"\x01")
    mac_d = blake3_keyed(mac_key, common + b"\x02" + f["identity"])
    check(f"{name}: finish's mac_d verifies", mac_d == f["macD"])
    transcript = lp(b"unibus replica-handshake transcript v1") + common[32:] + mac_a + mac_d + f["identity"]
    check(f"{name}: finish's signature verifies", ed_verify(f["identity"], MARKER + transcript, f["signature"]))
    reply = parse_replica_finish_reply(h(w["finishReply"]))
    check(f"{name}: finish reply bytes", reply == {"sessionId": blake3_derive(ctx["sessionId"], transcript, 16), "createdAt": w["createdAt"], "expiresAt": w["expiresAt"]})



def check_replica_lifecycle():
    v = load("replica-lifecycle.json")
    ctx, lab = v["contexts"], v["labels"]
    seed = h(v["seed"])
    hist_seed = blake3_derive(ctx["history"], seed)
    check("replica lifecycle: history key", ed_public(hist_seed).hex() == v["historyKey"])
    agree = blake3_derive(ctx["agreement"], seed)
    check("replica lifecycle: agreement key", agree.hex() == v["agreementSecretKey"] and x25519_public(agree).hex() == v["agreementKey"])
    wrap_key = blake3_derive(ctx["wrap"], seed)
    check("replica lifecycle: wrap key", wrap_key.hex() == v["wrapKey"])
    text = base64.b32encode(seed + blake3_derive(ctx["check"], seed, 4)).decode().rstrip("=")
    check("replica lifecycle: recovery secret", "UBRS-" + "-".join(text[i:i + 6] for i in range(0, len(text), 6)) == v["recoverySecret"])

    def fld(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack(">I", len(b)) + b

    g = v["genesis"]
    e = g["entry"]
    b64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    body_hash = sha256(h(g["body"]))
    check("replica lifecycle: body hash", body_hash == b64(e["bodyHash"]))
    subject, nonce = e["subject"].encode(), e["nonce"].encode()
    signing = MARKER + lp(b"unibus-envelope-v1") + struct.pack(">I", len(subject)) + subject + struct.pack(">Q", e["timestamp"]) + lp(nonce) + body_hash
    check("replica lifecycle: actor envelope over the body hash", ed_verify(principal_key(e["signer"]), signing, b64(e["signature"])))
    hash_input = fld(lab["entry"]) + struct.pack(">Q", e["seq"]) + b64(e["prev"]) + fld(e["type"]) + fld(e["subject"]) + body_hash + fld(e["signer"]) + struct.pack(">Q", e["timestamp"]) + fld(e["nonce"]) + fld(e["signature"]) + fld(e["effect"])
    check("replica lifecycle: entry hash", hash_input.hex() == g["entryHashInput"] and sha256(hash_input).hex() == g["entryHash"])
    cluster_id = h(json.loads(e["effect"])["clusterId"])
    statement = MARKER + fld(lab["latest"]) + fld(cluster_id) + struct.pack(">Q", 0) + fld(h(g["entryHash"]))
    check("replica lifecycle: latest statement", statement.hex() == g["latestStatement"])
    check("replica lifecycle: latest signature", ed_verify(ed_public(hist_seed), statement, b64(g["latest"]["signature"])))
    w = v["wrap"]
    aad = fld(lab["wrap"]) + fld(w["nodeId"]) + fld(w["joinKey"])
    wrapped = h(w["wrapped"])
    check("replica lifecycle: wrapped cuk", xchacha_decrypt(wrap_key, wrapped[:24], wrapped[24:], aad).hex() == w["cuk"])


def check_node_store_key():
    v = load("node-store-key.json")
    for c in v["cases"]:
        mixed = bytes(a ^ b for a, b in zip(h(c["nuk"]), h(c["cuk"])))
        check(f"node store key {c['name']}", "K" + blake3_derive(v["context"], mixed).hex() == c["storeKey"])


for step in (check_blake3_official, check_ed25519, check_x25519, check_aead, check_envelope, check_sealed_box, check_frames, check_share_set, check_membership_log, check_replica_handshake, check_replica_lifecycle, check_node_store_key):
    before = (passed, failed)
    try:
        step()
    except Exception as err:  # a crash in one group is a failure of that group, not of the run
        check(f"{step.__name__} raised {type(err).__name__}: {err}", False)
    print(f"{step.__name__[6:]}: {passed - before[0]} passed, {failed - before[1]} failed")
print(f"{passed} passed, {failed} failed")
if "--report" in sys.argv:
    with open(sys.argv[sys.argv.index("--report") + 1], "w", encoding="utf-8") as f:
        json.dump({"numPassedTests": passed, "numFailedTests": failed, "numPendingTests": 0, "success": failed == 0}, f)
sys.exit(1 if failed else 0)
