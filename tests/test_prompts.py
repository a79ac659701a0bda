import pytest

from processing.prompts import PromptTemplate
from tests._data_fixtures import GOLDEN_PROMPT, GOLDEN_ROW, ML_DISPLAY, ML_FIELDS


def _render(template, rows):
    return template.render(ML_FIELDS, ML_DISPLAY, [[row[name] for row in rows] for name in ML_FIELDS])


def test_golden_movielens_prompt_and_spans():
    texts, spans = _render(PromptTemplate(), [GOLDEN_ROW])
    assert texts == [GOLDEN_PROMPT]
    assert spans.shape == (1, 8, 2)
    values = [texts[0][s:e] for s, e in spans[0].tolist()]
    assert values == ["259", "male", "21", "student", "48823", "255", "My Best Friend's Wedding (1997)", "Comedy"]


def test_missing_values_render_placeholder_and_stay_aligned():
    row = dict(GOLDEN_ROW, gender=None, age=float("nan"), occupation="  ")
    texts, spans = _render(PromptTemplate(missing_value="n/a"), [GOLDEN_ROW, row])
    assert "gender is n/a. age is n/a. occupation is n/a." in texts[1]
    values = [texts[1][s:e] for s, e in spans[1].tolist()]
    assert values[1:4] == ["n/a"] * 3 and values[-1] == "Comedy"


def test_configurable_pattern_separator_and_value_inside_name():
    template = PromptTemplate(
        pattern="{name}: {value}", field_patterns={"b": "[{value}] as {name}"}, separator="; ", ending=""
    )
    texts, spans = template.render(["a", "b"], ["a", "b"], [["a", "a: a"], ["b", ""]])
    assert texts == ["a: a; [b] as b", "a: a: a; [unknown] as b"]
    assert [[t[s:e] for s, e in row] for t, row in zip(texts, spans.tolist())] == [["a", "b"], ["a: a", "unknown"]]


def test_pattern_needs_one_value_slot():
    with pytest.raises(ValueError, match="exactly once"):
        PromptTemplate(pattern="{name} is")


def test_hidden_fields_are_checked_against_the_schema():
    template = PromptTemplate(hidden_fields=["user_id", "movie_id"])
    assert template.text_positions(ML_FIELDS) == [1, 2, 3, 4, 6, 7]
    with pytest.raises(ValueError, match=r"\['item_id'\] are not schema fields"):
        PromptTemplate(hidden_fields=["item_id"]).text_positions(ML_FIELDS)
    with pytest.raises(ValueError, match="hides every field"):
        PromptTemplate(hidden_fields=list(ML_FIELDS)).text_positions(ML_FIELDS)
