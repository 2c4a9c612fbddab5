"""What `analyze` reports: one `LayerRecord` per layer call, gathered in a `ModelAnalysis`
that prints as a table and converts to JSON (see `kcnn.analysis.analyze`)."""

import dataclasses


@dataclasses.dataclass
class LayerRecord:
    """What `analyze` found about one call of one layer.

    Args:
        name: str. The layer name, prefixed `"outer/inner"` for layers of nested
            models; a second call of a shared layer is suffixed `"@1"`, and so on.
        class_name: str. The layer class name, e.g. `"Conv2D"`.
        output_shape: tuple. The output shape with the batch dimension `None`; a
            tuple of such shapes for a layer with several outputs.
        params: int. Weights first used by this call.
        macs: int. Multiply-accumulates for one input example.
        receptive_field: number, tuple or None. Receptive field in model input
            pixels: one number when all spatial axes agree, else `(r_h, r_w)`.
        jump: number, tuple or None. Distance in model input pixels between two
            adjacent output positions, with the same convention.
        start: number, tuple or None. Centre, in model input pixels, of the receptive
            field of the first output position (output position `n` is centred at
            `start + n * jump`; pixel `i` of the input has its centre at `i`). Negative
            when padding puts the first window partly outside the input. None when
            unknown (after a transposed convolution or upsampling, a global pooling, or a
            "same" padding on an input of unknown size).
    """

    name: str
    class_name: str
    output_shape: tuple
    params: int
    macs: int
    receptive_field: float | tuple | None
    jump: float | tuple | None
    start: float | tuple | None = None


@dataclasses.dataclass
class ModelAnalysis:
    """Per-layer records and totals returned by `analyze`.

    Args:
        layers: list of `LayerRecord`, in execution order.
        total_params: int. Sum of the records' parameters; equals
            `model.count_params()`.
        total_macs: int. Sum of the records' MACs for one input example.
        unknown_layers: list of str. Names of the records whose MACs or geometry
            `analyze` could not derive (see the module docstring).
    """

    layers: list[LayerRecord]
    total_params: int
    total_macs: int
    unknown_layers: list[str] = dataclasses.field(default_factory=list)

    def to_table(self):
        """Returns an aligned text table with one row per record and a totals row."""
        header = ("Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump", "Start")
        right_aligned = (False, False, False, True, True, True, True, True)
        rows = [
            (
                record.name,
                record.class_name,
                _format_shape(record.output_shape),
                f"{record.params:,}",
                f"{record.macs:,}",
                _format_number(record.receptive_field),
                _format_number(record.jump),
                _format_number(record.start),
            )
            for record in self.layers
        ]
        totals = ("Total", "", "", f"{self.total_params:,}", f"{self.total_macs:,}", "", "", "")
        widths = [max(len(row[i]) for row in [header, *rows, totals]) for i in range(len(header))]

        def line(cells):
            padded = [
                cell.rjust(width) if right else cell.ljust(width)
                for cell, width, right in zip(cells, widths, right_aligned, strict=True)
            ]
            return "  ".join(padded).rstrip()

        rule_width = sum(widths) + 2 * (len(widths) - 1)
        lines = [line(header), "=" * rule_width, *(line(row) for row in rows)]
        lines += ["=" * rule_width, line(totals)]
        if self.unknown_layers:
            lines.append(
                "Not fully analysed (MACs counted as 0 or geometry unknown): "
                + ", ".join(self.unknown_layers)
            )
        return "\n".join(lines)

    def to_dict(self):
        """Returns the analysis as JSON-serialisable dicts, lists, numbers and strings."""
        return {
            "layers": [
                {field: _to_json(value) for field, value in dataclasses.asdict(record).items()}
                for record in self.layers
            ],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "unknown_layers": list(self.unknown_layers),
        }

    def __str__(self):
        return self.to_table()


def _tidy(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def report_value(values):
    """One number when every axis agrees (the square case), else the per-axis tuple; None
    when no axis has a value."""
    values = tuple(_tidy(value) for value in values)
    if not values or all(value is None for value in values):
        return None
    if all(value == values[0] for value in values):
        return values[0]
    return values


def _format_shape(shape):
    return str(shape).replace(",)", ")")


def _format_number(value):
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_number(item) for item in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _to_json(value):
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return value
