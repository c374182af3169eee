"""The stored-object format: every object is ``age(zstd(plaintext))``.

Nothing here is forge's own invention; an object opens with the reference tools alone
(``age -d -i identity.txt OBJECT | zstd -d``, see ``FORMAT.md`` beside the backup package):

``age``   age v1 files (C2SP age.md): header, X25519 recipient stanzas, MAC, and the
          STREAM payload of 64 KiB ChaCha20-Poly1305 chunks, encrypted and decrypted lazily
``keys``  X25519 key pairs in the text forms of ``age-keygen``, the recipient stanzas
          they wrap, and parsing what users paste into the backup secrets
``zstd``  zstd framing: compressed frames, or raw blocks for incompressible media, and
          a decompressor that bounds its output and refuses truncated or trailing data

X25519 recipients only: no passphrase (scrypt), ssh or plugin recipients.
Errors are :mod:`forge_ci.backup.errors` leaves (``BackupFormatError``,
``NoIdentityError``, ``KeyFormatError``).
"""
