"""datamgmt.age against pyrage (the Rust age crate), both ways, at the chunk boundaries."""

from __future__ import annotations

import io
import os

import pyrage
import pytest

from datamgmt import age

SIZES = [0, 1, age.CHUNK - 1, age.CHUNK, age.CHUNK + 1, 3 * age.CHUNK, 200_001]


def encrypt(data: bytes, **options) -> bytes:
    key, header = age.encryption_prepare(**options)
    out = io.BytesIO()
    writer = age.AgeWriter(out, file_key=key, header=header)
    for start in range(0, len(data), 10_000):
        writer.write(data[start : start + 10_000])
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("size", SIZES)
def test_passphrase_files_open_with_pyrage(size):
    data = os.urandom(size)

    assert pyrage.passphrase.decrypt(encrypt(data, passphrase="pw", scrypt_log_n=10), "pw") == data


def test_pyrage_passphrase_files_open_here():
    # pyrage always uses age's default work factor (a second or more a file): one size.
    data = os.urandom(2 * age.CHUNK)
    theirs = pyrage.passphrase.encrypt(data, "pw")
    assert age.AgeReader(io.BytesIO(theirs), passphrases=["pw"]).read() == data


@pytest.mark.parametrize("size", [0, age.CHUNK, 100_000])
def test_recipient_files_open_with_pyrage_and_back(size):
    data = os.urandom(size)
    secret, public = age.keypair_generate()

    assert (
        pyrage.decrypt(
            encrypt(data, recipients=[public]), [pyrage.x25519.Identity.from_str(secret)]
        )
        == data
    )
    identity = pyrage.x25519.Identity.generate()
    theirs = pyrage.encrypt(data, [identity.to_public()])
    assert (
        age.AgeReader(io.BytesIO(theirs), identities=[age.identity_parse(str(identity))]).read()
        == data
    )


def test_a_wrong_passphrase_a_flipped_bit_and_a_truncation_are_refused():
    sealed = encrypt(os.urandom(3 * age.CHUNK), passphrase="pw", scrypt_log_n=10)

    with pytest.raises(age.WrongKey):
        age.AgeReader(io.BytesIO(sealed), passphrases=["other"])
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 0x01
    with pytest.raises(age.AgeError):
        age.AgeReader(io.BytesIO(bytes(flipped)), passphrases=["pw"]).read()
    # The MAC line ("--- " + 43 base64 characters + newline), then the 16-byte nonce.
    payload = sealed.index(b"\n---") + 1 + 48 + 16
    for cut in (len(sealed) - 1, payload + age.CHUNK + age.TAG):  # mid-chunk, at a boundary
        with pytest.raises(age.AgeError):
            age.AgeReader(io.BytesIO(sealed[:cut]), passphrases=["pw"]).read()


def test_bad_keys_are_refused():
    with pytest.raises(ValueError):
        age.recipient_parse("age1notakey")
    with pytest.raises(ValueError):
        age.identity_parse("AGE-SECRET-KEY-1XYZ")
