"""Encrypted offsite backups that restore byte for byte, even without forge.

The repository format is described in ``FORMAT.md`` beside this file. Modules:

``layout``      keys in the store, object naming (what names reveal)
``snapshot``    the snapshot manifest and its hostile-path checks
``signing``     Ed25519 signing keys and the signature beside each manifest
``objects``     age(zstd(plaintext)) streams, hashing on the fly
``repo``        one store + group + keys: list, load (authenticated), save (signed), open
``scan``        the host side: list paths, hash files, the hash cache
``tarstream``   tar as the wire format to and from the host
``dump``        mariadb-dump out, mariadb in, on the host
``files``       plan file uploads, stream them, re-read changed files
``uploader``    bounded parallel puts: sealed in the caller, stored by threads
``take``        a backup run: dump, files, manifest last
``verify``      authenticate everything a snapshot references
``restore``     authenticate first, refuse paths backups do not own, then stage, import
                and swap
``retention``   restic's forget rules as a pure function
``prune``       forget + delete unreferenced objects, under an exclusive lock
``store_lock``  advisory store locks (shared for backup, exclusive for prune)
``session``     build stores, keys and hosts from config + environment
``errors``      the backup leaves of the error tree
``cli``         the commands

The object format (age, zstd, keys) is the ``format`` subpackage.
"""
