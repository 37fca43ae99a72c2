"""Where Redis is: plain URLs and Sentinels."""

import pytest
from pydantic import ValidationError

from workers.cli import masked
from workers.config import Settings
from workers.store.urls import ASKING, Sentinels


def test_a_sentinel_url_names_the_sentinels_the_primary_its_password_and_database() -> None:
    found = Sentinels.parse("sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380/2?master=sm")
    assert found == Sentinels(addresses=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), master="sm", password="s@cret",
                              db=2)
    assert found.celery_broker() == ("sentinel://:s%40cret@10.0.0.1:26379/2;sentinel://:s%40cret@10.0.0.2:26380/2",
                                     {"master_name": "sm", "sentinel_kwargs": ASKING})
    ipv6 = Sentinels.parse("sentinel://alice:pw@[::1]:26379?master=sm")
    assert ipv6 == Sentinels((("::1", 26379),), "sm", password="pw", username="alice")
    assert ipv6.celery_broker()[0] == "sentinel://alice:pw@[::1]:26379/0"
    assert Sentinels.parse("sentinel://127.0.0.1:26379?master=sm") == Sentinels((("127.0.0.1", 26379),), "sm")
    assert Sentinels.parse("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize("url", ["sentinel://127.0.0.1:26379", "sentinel://127.0.0.1?master=sm",
                                 "sentinel://127.0.0.1:26379/x?master=sm"])
def test_a_malformed_sentinel_url_is_refused_at_startup(url: str) -> None:
    with pytest.raises(ValidationError):
        Settings(redis_url=url)


def test_a_password_never_shows_in_a_masked_url_nor_in_a_refusal() -> None:
    assert masked("sentinel://:p@ss/w@h1:26379,h2:26379/0?master=sm") == "sentinel://:***@h1:26379,h2:26379/0?master=sm"
    assert masked("redis://alice:secret@127.0.0.1:6379/0") == "redis://alice:***@127.0.0.1:6379/0"
    assert masked("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url="sentinel://:S3cretPassw0rd@127.0.0.1:26379")
    assert "S3cretPassw0rd" not in str(refused.value)
