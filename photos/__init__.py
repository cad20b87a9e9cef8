"""Wound photos sent into a live case (issue 11): upload links and the rules an image must pass.

Pure domain (`links`, `rules`): no I/O, time passed in. The adapters are
`photos.images` (Pillow: decode, re-encode, thumbnail), `photos.files` (sealed
files under `<recordings dir>/photos/<case id>/`), `db.photos` (the tables) and
`console.photos` (the caller's upload page and the staff routes).
"""
