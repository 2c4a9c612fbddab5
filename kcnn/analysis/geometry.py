"""Receptive field, jump and start through a layer: `LayerGeometry` and the per-axis
arithmetic of Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019 (see `kcnn.analysis.analyze` for the conventions)."""

import dataclasses
import numbers
from typing import NamedTuple

_KINDS = ("identity", "sliding", "transpose", "whole_input", "unknown")


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """How a layer maps the receptive field, jump and start of its inputs to its outputs.

    Use the constructors rather than the fields: `LayerGeometry.identity(pad_before)`,
    `LayerGeometry.sliding(kernel_size, strides, dilation_rate, pad_before)`,
    `LayerGeometry.transpose(kernel_size, strides, dilation_rate)`,
    `LayerGeometry.whole_input()` and `LayerGeometry.unknown()`. The module
    docstring gives the formula of each kind.

    Args:
        kind: str. One of `"identity"`, `"sliding"`, `"transpose"`,
            `"whole_input"` or `"unknown"`. Defaults to `"identity"`.
        kernel_size: int or tuple of ints, one per spatial axis. Defaults to `1`.
        strides: int or tuple of ints. Defaults to `1`.
        dilation_rate: int or tuple of ints. Defaults to `1`.
        pad_before: int, tuple of ints (one per spatial axis) or None. Input pixels the
            layer adds before the first one (negative when it crops): it moves the start,
            not the receptive field or the jump. None when unknown (a "same" padding on
            an input of unknown size). Defaults to `0`.

    Raises:
        ValueError: if `kind` is not one of the kinds above.
    """

    kind: str = "identity"
    kernel_size: int | tuple[int, ...] = 1
    strides: int | tuple[int, ...] = 1
    dilation_rate: int | tuple[int, ...] = 1
    pad_before: int | tuple[int, ...] | None = 0

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}. Received: kind={self.kind!r}")

    @classmethod
    def identity(cls, pad_before=0):
        """Receptive field and jump pass through (largest over the inputs); padding or
        cropping moves the start."""
        return cls("identity", pad_before=pad_before)

    @classmethod
    def sliding(cls, kernel_size, strides=1, dilation_rate=1, pad_before=None):
        """A window slid over the input: convolution or pooling. Without `pad_before`
        (see `kcnn.analysis.sliding_geometry`) the start is unknown from this layer on."""
        return cls("sliding", kernel_size, strides, dilation_rate, pad_before)

    @classmethod
    def transpose(cls, kernel_size, strides=1, dilation_rate=1):
        """A transposed convolution or upsampling by `strides`."""
        return cls("transpose", kernel_size, strides, dilation_rate)

    @classmethod
    def whole_input(cls):
        """Every output depends on the whole input (global pooling, flatten)."""
        return cls("whole_input")

    @classmethod
    def unknown(cls):
        """The geometry cannot be derived; later receptive fields become `None`."""
        return cls("unknown")


class Field(NamedTuple):
    """Receptive field, jump and start of one tensor, one entry per model input axis.

    `start` is the centre of the receptive field of the first output position, in model
    input pixels (pixel `i` has its centre at `i`), Araujo et al.'s "effective stride and
    padding" read as a centre: output position `n` is centred at `start + n * jump`.
    """

    receptive_field: tuple
    jump: tuple
    start: tuple


def per_axis(value, num_axes):
    if isinstance(value, numbers.Number):
        return (value,) * num_axes
    value = tuple(value)
    return value if len(value) == num_axes else None


def _merge_fields(fields, num_axes):
    receptive_field, jump, start = [], [], []
    for axis in range(num_axes):
        fields_axis = [field.receptive_field[axis] for field in fields]
        receptive_field.append(None if None in fields_axis else max(fields_axis))
        jumps_axis = [field.jump[axis] for field in fields if field.jump[axis] is not None]
        jump.append(max(jumps_axis) if jumps_axis else None)
        # Merged maps are aligned position by position; the widest field's centre is kept
        # (they agree when the branches pad alike, as residual blocks do).
        widest = max(fields, key=lambda field: field.receptive_field[axis] or 0)
        start.append(None if receptive_field[-1] is None else widest.start[axis])
    return Field(tuple(receptive_field), tuple(jump), tuple(start))


def unknown_field(num_axes):
    return Field((None,) * num_axes, (None,) * num_axes, (None,) * num_axes)


def input_field(num_axes):
    """The model input: every pixel sees itself (r = 1, j = 1, first centre at 0)."""
    return Field((1,) * num_axes, (1,) * num_axes, (0,) * num_axes)


def apply_geometry(geometry, fields, num_axes, input_sizes):
    """Returns the output `Field`, or None when the geometry does not fit the axes."""
    if geometry.kind == "unknown" or not fields:
        return unknown_field(num_axes)
    if geometry.kind == "whole_input":
        return Field(tuple(input_sizes), (None,) * num_axes, (None,) * num_axes)
    merged = _merge_fields(fields, num_axes)
    pad_before = (None,) * num_axes
    if geometry.pad_before is not None:
        pad_before = per_axis(geometry.pad_before, num_axes)
        if pad_before is None:
            return None
    if geometry.kind == "identity":
        start = tuple(
            _moved(start_in, jump_in, pad, 0)
            for start_in, jump_in, pad in zip(merged.start, merged.jump, pad_before, strict=True)
        )
        return merged._replace(start=start)
    kernel_size = per_axis(geometry.kernel_size, num_axes)
    strides = per_axis(geometry.strides, num_axes)
    dilation_rate = per_axis(geometry.dilation_rate, num_axes)
    if kernel_size is None or strides is None or dilation_rate is None:
        return None
    receptive_field, jump, start = [], [], []
    for axis in range(num_axes):
        field_in, jump_in = merged.receptive_field[axis], merged.jump[axis]
        kernel, stride, dilation = kernel_size[axis], strides[axis], dilation_rate[axis]
        if jump_in is None:
            # Already the whole input (or unknown): a window cannot widen it.
            receptive_field.append(field_in)
            jump.append(None)
            start.append(None)
            continue
        if geometry.kind == "sliding":
            step, jump_out = jump_in, jump_in * stride
            # The first window covers input positions -pad .. -pad + (k - 1) d.
            start.append(
                _moved(merged.start[axis], jump_in, pad_before[axis], (kernel - 1) * dilation / 2)
            )
        else:
            jump_out = jump_in / stride
            step = jump_out
            start.append(None)
        receptive_field.append(
            None if field_in is None else field_in + (kernel - 1) * dilation * step
        )
        jump.append(jump_out)
    return Field(tuple(receptive_field), tuple(jump), tuple(start))


def _moved(start, jump, pad_before, centre):
    """The start after a layer whose first output is centred `centre - pad_before` input
    positions of the layer after its first input position."""
    if start is None or jump is None or pad_before is None:
        return None
    return start + (centre - pad_before) * jump
