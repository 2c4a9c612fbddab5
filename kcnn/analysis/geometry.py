"""Receptive field and jump through a layer: `LayerGeometry` and the per-axis arithmetic of
Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019 (see `kcnn.analysis.analyze` for the conventions)."""

import dataclasses
import numbers
from typing import NamedTuple

_KINDS = ("identity", "sliding", "transpose", "whole_input", "unknown")


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """How a layer maps the receptive field and jump of its inputs to its outputs.

    Use the constructors rather than the fields: `LayerGeometry.identity()`,
    `LayerGeometry.sliding(kernel_size, strides, dilation_rate)`,
    `LayerGeometry.transpose(kernel_size, strides, dilation_rate)`,
    `LayerGeometry.whole_input()` and `LayerGeometry.unknown()`. The module
    docstring gives the formula of each kind.

    Args:
        kind: str. One of `"identity"`, `"sliding"`, `"transpose"`,
            `"whole_input"` or `"unknown"`. Defaults to `"identity"`.
        kernel_size: int or tuple of ints, one per spatial axis. Defaults to `1`.
        strides: int or tuple of ints. Defaults to `1`.
        dilation_rate: int or tuple of ints. Defaults to `1`.

    Raises:
        ValueError: if `kind` is not one of the kinds above.
    """

    kind: str = "identity"
    kernel_size: int | tuple[int, ...] = 1
    strides: int | tuple[int, ...] = 1
    dilation_rate: int | tuple[int, ...] = 1

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}. Received: kind={self.kind!r}")

    @classmethod
    def identity(cls):
        """Receptive field and jump pass through (largest over the inputs)."""
        return cls("identity")

    @classmethod
    def sliding(cls, kernel_size, strides=1, dilation_rate=1):
        """A window slid over the input: convolution or pooling."""
        return cls("sliding", kernel_size, strides, dilation_rate)

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
    """Receptive field and jump of one tensor, one entry per model input axis."""

    receptive_field: tuple
    jump: tuple


def _per_axis(value, num_axes):
    if isinstance(value, numbers.Number):
        return (value,) * num_axes
    value = tuple(value)
    return value if len(value) == num_axes else None


def _merge_fields(fields, num_axes):
    receptive_field, jump = [], []
    for axis in range(num_axes):
        fields_axis = [field.receptive_field[axis] for field in fields]
        receptive_field.append(None if None in fields_axis else max(fields_axis))
        jumps_axis = [field.jump[axis] for field in fields if field.jump[axis] is not None]
        jump.append(max(jumps_axis) if jumps_axis else None)
    return Field(tuple(receptive_field), tuple(jump))


def unknown_field(num_axes):
    return Field((None,) * num_axes, (None,) * num_axes)


def apply_geometry(geometry, fields, num_axes, input_sizes):
    """Returns the output `Field`, or None when the geometry does not fit the axes."""
    if geometry.kind == "unknown" or not fields:
        return unknown_field(num_axes)
    if geometry.kind == "whole_input":
        return Field(tuple(input_sizes), (None,) * num_axes)
    merged = _merge_fields(fields, num_axes)
    if geometry.kind == "identity":
        return merged
    kernel_size = _per_axis(geometry.kernel_size, num_axes)
    strides = _per_axis(geometry.strides, num_axes)
    dilation_rate = _per_axis(geometry.dilation_rate, num_axes)
    if kernel_size is None or strides is None or dilation_rate is None:
        return None
    receptive_field, jump = [], []
    for axis in range(num_axes):
        field_in, jump_in = merged.receptive_field[axis], merged.jump[axis]
        kernel, stride, dilation = kernel_size[axis], strides[axis], dilation_rate[axis]
        if jump_in is None:
            # Already the whole input (or unknown): a window cannot widen it.
            receptive_field.append(field_in)
            jump.append(None)
            continue
        if geometry.kind == "sliding":
            step, jump_out = jump_in, jump_in * stride
        else:
            jump_out = jump_in / stride
            step = jump_out
        receptive_field.append(
            None if field_in is None else field_in + (kernel - 1) * dilation * step
        )
        jump.append(jump_out)
    return Field(tuple(receptive_field), tuple(jump))
