"""A model's config: a flat table in the models file and the constructor, sections in the code."""

import pytest

from workers.config import SECTION_OF, SECTIONS, ConfigError, ModelConfig, Scaling, parse_models

pytestmark = pytest.mark.unit
TABLE = {"protocol": "kserve", "served_name": "iris", "image": "i:1", "gpus": ["0"], "concurrency": 2,
         "max_replicas": 3, "max_attempts": 1, "example_input": {"inputs": []}}


def test_a_flat_table_lands_in_its_sections_from_the_file_and_the_constructor_alike() -> None:
    model = parse_models({"models": {"m": TABLE}})["m"]
    assert model == ModelConfig(name="m", **TABLE)
    assert (model.calls.protocol, model.served, model.runtime.image, model.runtime.gpus) == ("kserve", "iris", "i:1",
                                                                                             ["0"])
    assert (model.scaling.concurrency, model.scaling.max_replicas, model.jobs.max_attempts) == (2, 3, 1)
    assert model.docs.example_input == {"inputs": []} and model.jobs.request_timeout == 30  # the rest: defaults


def test_a_section_may_be_given_whole_but_not_with_its_keys_beside_it() -> None:
    assert ModelConfig(name="m", scaling=Scaling(concurrency=4)).scaling.concurrency == 4
    with pytest.raises(ValueError, match="scaling is given whole and min_replicas beside it"):
        ModelConfig(name="m", scaling=Scaling(), min_replicas=1)


def test_the_models_file_stays_flat_a_section_table_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"model 'm': unknown key 'scaling'; allowed: args, build,") as refused:
        parse_models({"models": {"m": {"scaling": {"concurrency": 2}}}})
    assert "calls" not in str(refused.value)


def test_an_error_in_a_section_names_the_flat_key() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_models({"models": {"m": {"concurrency": 0, "volumes": ["cache:/w"]}}})
    assert "model 'm': volumes.0: String should match pattern" in str(refused.value)
    assert "model 'm': concurrency: Input should be greater than 0 (got 0)" in str(refused.value)


def test_every_key_belongs_to_exactly_one_section_of_the_model() -> None:
    assert set(SECTIONS) == set(ModelConfig.model_fields) - {"name"}
    assert all(ModelConfig.model_fields[name].annotation is kind for name, kind in SECTIONS.items())
    assert len(SECTION_OF) == sum(len(kind.model_fields) for kind in SECTIONS.values())
