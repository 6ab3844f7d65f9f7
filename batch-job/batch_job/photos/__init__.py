"""The photos in the object store: the folder layout (inbox/, sorted/, review/, unusable/), listing the inbox,
reading and moving a photo, and finding a result's photo wherever routing put it."""
