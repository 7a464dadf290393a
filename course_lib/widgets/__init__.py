"""Interactive demos, one module per notebook topic.

Every demo draws its default state as a static figure first (so a notebook reads well on
GitHub and under nbval) and then returns an ``ipywidgets`` control panel whose live area
stays empty until a control moves (:func:`live_output`).
"""

import ipywidgets as _widgets


def live_output(render, controls: dict) -> _widgets.Output:
    """An output area that calls ``render(**values)`` each time one of ``controls`` changes.

    Unlike ``ipywidgets.interactive_output`` it draws nothing when it is built: the demo's
    default state is the static figure drawn just before, so a notebook stores the figure once,
    and a notebook runner (nbclient, Voilà) never has to mimic an Output widget while the cell
    runs (nbclient can then miss the cell's reply and hang).
    """
    output = _widgets.Output()

    def redraw(change):
        with output:
            output.clear_output(wait=True)
            render(**{name: control.value for name, control in controls.items()})

    for control in controls.values():
        control.observe(redraw, names="value")
    return output
