"""Image helpers shared by the data loaders."""

import numpy as np
import PIL.Image


def resize_image(image, height, width, nearest=False):
    """Resizes a uint8 `(H, W)` or `(H, W, C)` image to `(height, width)`.

    PIL rather than skimage: it is several times faster and antialiases when
    shrinking. `nearest=True` keeps label values intact (for masks).
    """
    if image.shape[:2] == (height, width):
        return image.copy()
    resample = PIL.Image.NEAREST if nearest else PIL.Image.BILINEAR
    channels = image.shape[2:]
    if channels and channels[0] not in (3, 4):
        # PIL has no multi-band mode for 1 or 2 channels: resize band by band.
        bands = [
            resize_image(image[..., band], height, width, nearest) for band in range(channels[0])
        ]
        return np.stack(bands, axis=-1)
    resized = PIL.Image.fromarray(np.ascontiguousarray(image)).resize((width, height), resample)
    return np.asarray(resized).copy()
