"""NumPy float64 reference of deformable convolution: a direct loop over output positions,
kernel taps and the four bilinear corners (Dai et al. 2017, eq. 2; Zhu et al. 2019, eq. 1),
written from the papers' formula and torchvision's documented layout, not from kcnn's code.
"""

import numpy as np


def bilinear(image, y, x):
    """Bilinear value of `image` (H, W, C) at (y, x); pixels outside the image read 0."""
    height, width, channels = image.shape
    value = np.zeros(channels)
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return value
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    for cy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for cx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= cy < height and 0 <= cx < width:
                value += wy * wx * image[cy, cx]
    return value


def deform_conv2d(
    x, offsets, kernel, bias=None, mask=None, stride=(1, 1), pad=((0, 0), (0, 0)), dilation=(1, 1)
):
    """`pad` is ((top, bottom), (left, right)) zeros; offsets and mask in torchvision order."""
    x, offsets, kernel = (np.asarray(v, np.float64) for v in (x, offsets, kernel))
    batch, height, width, channels = x.shape
    kh, kw, _, filters = kernel.shape
    taps = kh * kw
    groups = offsets.shape[-1] // (2 * taps)
    per_group = channels // groups
    out_h = (height + sum(pad[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + sum(pad[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    assert offsets.shape[1:3] == (out_h, out_w)
    y = np.zeros((batch, out_h, out_w, filters))
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for g in range(groups):
                    channels_g = slice(g * per_group, (g + 1) * per_group)
                    for p in range(kh):
                        for q in range(kw):
                            k = p * kw + q
                            dy = offsets[b, i, j, 2 * (g * taps + k)]
                            dx = offsets[b, i, j, 2 * (g * taps + k) + 1]
                            sy = i * stride[0] - pad[0][0] + p * dilation[0] + dy
                            sx = j * stride[1] - pad[1][0] + q * dilation[1] + dx
                            sample = bilinear(x[b, :, :, channels_g], sy, sx)
                            if mask is not None:
                                sample = sample * float(mask[b, i, j, g * taps + k])
                            y[b, i, j] += sample @ kernel[p, q, channels_g]
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y
