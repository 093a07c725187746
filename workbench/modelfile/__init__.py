"""The personalised model file as an input: open a vendor's file safely and report what it carries.

- :mod:`.archive`: safe opening of ``.tar``/``.tar.gz``/``.zip`` (members checked before anything is read)
- :mod:`.formats`: safetensors headers, pickles disassembled (never loaded), weight formats, base families
- :mod:`.findings`: typed, graded findings (captions, metadata, EXIF/GPS, e-mails, ids)
- :mod:`.photos`: embedded photos, faces, and the match against the person's selfies
- :mod:`.inspector`: ``workbench inspect`` (:func:`.inspector.inspect_path`)
"""
