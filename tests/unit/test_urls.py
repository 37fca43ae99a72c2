"""Where Redis is: plain URLs and Sentinels."""

import pytest
from pydantic import ValidationError

from workers.config import Settings
from workers.store.urls import Sentinels


def test_a_sentinel_url_names_the_sentinels_the_primary_its_password_and_database() -> None:
    found = Sentinels.parse("sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380/2?master=sm")
    assert found == Sentinels(addresses=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), master="sm", password="s@cret",
                              db=2)
    assert found.celery_broker() == ("sentinel://:s%40cret@10.0.0.1:26379/2;sentinel://:s%40cret@10.0.0.2:26380/2",
                                     {"master_name": "sm"})
    assert Sentinels.parse("sentinel://127.0.0.1:26379?master=sm") == Sentinels((("127.0.0.1", 26379),), "sm")
    assert Sentinels.parse("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize("url", ["sentinel://127.0.0.1:26379", "sentinel://127.0.0.1?master=sm",
                                 "sentinel://127.0.0.1:26379/x?master=sm"])
def test_a_malformed_sentinel_url_is_refused_at_startup(url: str) -> None:
    with pytest.raises(ValidationError):
        Settings(redis_url=url)
