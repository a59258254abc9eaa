"""Streaming encryption in the age v1 format (https://age-encryption.org/v1).

Files written here open with the ``age``/``rage`` tools (``age -d file.age`` asks for the
passphrase; ``age -d -i key.txt file.age`` for recipients) and with pyrage. pyrage itself
streams only to public keys and takes whole byte strings in passphrase mode, so the format
is written here from its specification with ``cryptography``'s primitives (scrypt, X25519,
HKDF-SHA256, HMAC-SHA256, ChaCha20-Poly1305) in age's own STREAM framing (64 KiB chunks, a
counter nonce whose last byte marks the final chunk): tampering with any byte and
truncation at any point, a chunk boundary included, fail authentication. The tests check
both directions against pyrage (the Rust ``age`` crate).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
DEFAULT_SCRYPT_LOG_N = 18  # age's own default work factor (about a second)
MAX_SCRYPT_LOG_N = 22


class AgeError(Exception):
    """The file is not age, was tampered with or truncated, or no key given opens it."""


class WrongKey(AgeError):
    """None of the passphrases or identities given opens this file."""


# --- encodings -----------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if "=" in text or "\n" in text or "\r" in text:
        raise AgeError("malformed base64 in the age header")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as exc:
        raise AgeError("malformed base64 in the age header") from exc


_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: Iterable[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            check ^= generator[i] if (top >> i) & 1 else 0
    return check


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    words = _convert_bits(data, 8, 5, True)
    polymod = _bech32_polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[w] for w in words + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or not hrp or len(rest) < 6 or any(c not in _BECH32 for c in rest):
        raise ValueError("not bech32")
    words = [_BECH32.index(c) for c in rest]
    if _bech32_polymod([*_hrp_expand(hrp), *words]) != 1:
        raise ValueError("bad checksum")
    return hrp, bytes(_convert_bits(words[:-6], 5, 8, False))


def recipient_parse(text: str) -> bytes:
    """An ``age1...`` public key's 32 bytes (ValueError if it is not one)."""
    try:
        hrp, data = bech32_decode(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an age public key (age1...): {exc}") from exc
    if hrp != "age" or len(data) != 32:
        raise ValueError("not an age X25519 public key (age1...)")
    return data


def identity_parse(text: str) -> bytes:
    """An ``AGE-SECRET-KEY-1...`` identity's 32 bytes (ValueError if it is not one)."""
    try:
        hrp, data = bech32_decode(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an age identity (AGE-SECRET-KEY-1...): {exc}") from exc
    if hrp != "age-secret-key-" or len(data) != 32:
        raise ValueError("not an age X25519 identity (AGE-SECRET-KEY-1...)")
    return data


def identities_read(text: str) -> list[bytes]:
    """The identities of an identity file (``age-keygen``'s output: comments allowed)."""
    found = [
        identity_parse(line)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not found:
        raise ValueError("no AGE-SECRET-KEY-1... line in the identity file")
    return found


def keypair_generate() -> tuple[str, str]:
    """A new X25519 identity and its recipient: (``AGE-SECRET-KEY-1...``, ``age1...``)."""
    private = X25519PrivateKey.generate()
    secret = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    return bech32_encode("age-secret-key-", secret).upper(), bech32_encode("age", public)


# --- key derivation ------------------------------------------------------------------------
def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _scrypt_key(passphrase: str, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=b"age-encryption.org/v1/scrypt" + salt, length=32, n=2**log_n, r=8, p=1)
    return kdf.derive(passphrase.encode())


_ZERO_NONCE = b"\x00" * 12


def _stanza_lines(kind: str, args: list[str], body: bytes) -> bytes:
    encoded = _b64(body)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append("")  # a body's last line is always shorter than 64 columns
    return ("-> " + " ".join([kind, *args]) + "\n" + "\n".join(lines) + "\n").encode()


def _header(file_key: bytes, stanzas: list[bytes]) -> bytes:
    head = VERSION_LINE + b"\n" + b"".join(stanzas) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), head, hashlib.sha256).digest()
    return head + b" " + _b64(mac).encode() + b"\n"


# --- writing -------------------------------------------------------------------------------
def encryption_prepare(
    *,
    passphrase: str | None = None,
    recipients: list[str] | None = None,
    scrypt_log_n: int = DEFAULT_SCRYPT_LOG_N,
) -> tuple[bytes, bytes]:
    """A new file key and the header that wraps it for ``passphrase`` or ``recipients``.

    Made apart from the writing so that a request can turn a passphrase into a header at
    once and hand the job only the key for this one file, never the passphrase.
    """
    if bool(passphrase) == bool(recipients):
        raise ValueError("give a passphrase or recipients (not both)")
    file_key = os.urandom(16)
    stanzas: list[bytes] = []
    if passphrase:
        salt = os.urandom(16)
        wrap = ChaCha20Poly1305(_scrypt_key(passphrase, salt, scrypt_log_n))
        body = wrap.encrypt(_ZERO_NONCE, file_key, None)
        stanzas.append(_stanza_lines("scrypt", [_b64(salt), str(scrypt_log_n)], body))
    for recipient in recipients or []:
        public = recipient_parse(recipient)
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        wrap_key = _hkdf(shared, share + public, b"age-encryption.org/v1/X25519")
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        stanzas.append(_stanza_lines("X25519", [_b64(share)], body))
    return file_key, _header(file_key, stanzas)


class AgeWriter:
    """A binary file-like that encrypts what is written to it into ``sink``, 64 KiB at a
    time. ``close()`` writes the final chunk; a writer never closed leaves a file that
    every age reader refuses as truncated."""

    def __init__(self, sink: BinaryIO, *, file_key: bytes, header: bytes) -> None:
        nonce = os.urandom(16)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._sink = sink
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        sink.write(header + nonce)

    def _seal(self, chunk: bytes | memoryview, last: bool) -> None:
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        self._sink.write(self._aead.encrypt(nonce, chunk, None))
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed AgeWriter")
        self._buffer += data
        # Keep at least one byte back: only close() knows which chunk is the last. Seal
        # every full chunk before that, then drop them from the buffer in one move.
        end = (len(self._buffer) - 1) // CHUNK * CHUNK
        if end:
            with memoryview(self._buffer) as view:
                for offset in range(0, end, CHUNK):
                    self._seal(view[offset : offset + CHUNK], last=False)
            del self._buffer[:end]
        return len(data)

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._closed = True
        self._sink.flush()

    def writable(self) -> bool:
        return True


# --- reading -------------------------------------------------------------------------------
def _read_line(source: BinaryIO, limit: int = 1024) -> bytes:
    line = source.readline(limit)
    if not line.endswith(b"\n"):
        raise AgeError("the age header is truncated or malformed")
    return line[:-1]


def header_read(source: BinaryIO) -> tuple[list[tuple[list[str], bytes]], bytes, bytes]:
    """Parse the header: its stanzas (arguments, body), the bytes the MAC covers, the MAC."""
    if _read_line(source) != VERSION_LINE:
        raise AgeError("not an age v1 file")
    covered = VERSION_LINE + b"\n"
    stanzas: list[tuple[list[str], bytes]] = []
    while True:
        line = _read_line(source)
        if line.startswith(b"--- "):
            covered += b"---"
            return stanzas, covered, _unb64(line[4:].decode("ascii", "replace"))
        if not line.startswith(b"-> "):
            raise AgeError("malformed age header")
        covered += line + b"\n"
        args = line[3:].decode("ascii", "replace").split(" ")
        body = ""
        while True:
            body_line = _read_line(source)
            covered += body_line + b"\n"
            body += body_line.decode("ascii", "replace")
            if len(body_line) < 64:
                break
        stanzas.append((args, _unb64(body)))


def _unwrap(
    stanzas: list[tuple[list[str], bytes]], passphrases: list[str], identities: list[bytes]
) -> bytes:
    kinds = [args[0] for args, _ in stanzas]
    if "scrypt" in kinds and len(stanzas) != 1:
        raise AgeError("an scrypt stanza must be the only one")
    for args, body in stanzas:
        try:
            if args[0] == "scrypt" and len(args) == 3:
                if not passphrases:
                    raise WrongKey("this file is encrypted with a passphrase; none was given")
                log_n = int(args[2])
                if not 1 <= log_n <= MAX_SCRYPT_LOG_N or args[2] != str(log_n):
                    raise AgeError(f"scrypt work factor {args[2]} out of range")
                salt = _unb64(args[1])
                for passphrase in passphrases:
                    wrap = ChaCha20Poly1305(_scrypt_key(passphrase, salt, log_n))
                    try:
                        return wrap.decrypt(_ZERO_NONCE, body, None)
                    except InvalidTag:
                        continue
            elif args[0] == "X25519" and len(args) == 2:
                share = _unb64(args[1])
                for secret in identities:
                    private = X25519PrivateKey.from_private_bytes(secret)
                    public = private.public_key().public_bytes_raw()
                    shared = private.exchange(X25519PublicKey.from_public_bytes(share))
                    wrap_key = _hkdf(shared, share + public, b"age-encryption.org/v1/X25519")
                    try:
                        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
                    except InvalidTag:
                        continue
        except ValueError as exc:
            raise AgeError(f"malformed {args[0]} stanza: {exc}") from exc
    if "scrypt" in kinds:
        raise WrongKey("wrong passphrase")
    if not identities:
        raise WrongKey("this file is encrypted to public keys; give an identity file")
    raise WrongKey("none of the identities given opens this file")


class AgeReader:
    """A binary file-like that decrypts ``source``; every chunk is authenticated before any
    of its bytes are returned, and a missing final chunk raises AgeError at the end."""

    def __init__(
        self,
        source: BinaryIO,
        *,
        passphrases: list[str] | None = None,
        identities: list[bytes] | None = None,
        file_key: bytes | None = None,
    ) -> None:
        stanzas, covered, mac = header_read(source)
        if file_key is None:
            file_key = _unwrap(stanzas, passphrases or [], identities or [])
        expected = hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise AgeError("the age header was tampered with")
        nonce = source.read(16)
        if len(nonce) != 16:
            raise AgeError("the age file is truncated")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._source = source
        self._counter = 0
        self._pending = source.read(CHUNK + TAG)
        self._plain = b""
        self._done = False

    def _next_chunk(self) -> None:
        sealed = self._pending
        self._pending = self._source.read(CHUNK + TAG)
        last = not self._pending
        if len(sealed) < TAG or (not last and len(sealed) != CHUNK + TAG):
            raise AgeError("the age file is truncated or damaged")
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plain = self._aead.decrypt(nonce, sealed, None)
        except InvalidTag as exc:
            raise AgeError("the age file was tampered with or truncated") from exc
        if last and not plain and self._counter:
            raise AgeError("an empty final chunk after data: not a valid age file")
        self._counter += 1
        self._plain = plain
        self._done = last

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self._plain:
                if self._done:
                    break
                self._next_chunk()
                continue
            take = len(self._plain) if size < 0 else min(size - len(out), len(self._plain))
            out += self._plain[:take]
            self._plain = self._plain[take:]
        return bytes(out)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._source.close()


def file_key_unwrap(
    source: BinaryIO, *, passphrases: list[str] | None = None, identities: list[bytes] | None = None
) -> bytes:
    """The file key of an age file (its header checked): proves a passphrase or identity
    opens it without reading the payload."""
    stanzas, covered, mac = header_read(source)
    file_key = _unwrap(stanzas, passphrases or [], identities or [])
    expected = hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise AgeError("the age header was tampered with")
    return file_key


def is_age(head: bytes) -> bool:
    return head.startswith(VERSION_LINE + b"\n")
