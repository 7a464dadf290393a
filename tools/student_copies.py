# nbconvert configuration for the student copies (`make student`; tests/test_exercises.py):
# the notebooks without their solution cells, with the outputs of the exercise cells cleared.
c = get_config()  # noqa: F821 (nbconvert provides get_config when it loads this file)
c.NbConvertApp.export_format = "notebook"
c.TagRemovePreprocessor.enabled = True
c.TagRemovePreprocessor.remove_cell_tags = {"solution"}
c.TagRemovePreprocessor.remove_all_outputs_tags = {"exercise"}
