"""Interactive demos, one module per notebook topic.

Every demo draws its default state as a static figure first (so a notebook reads well on
GitHub and under nbval) and then returns an ``ipywidgets`` control panel for live use.
"""
