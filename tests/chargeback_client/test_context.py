"""Tags and tenant blocks: they nest, the inner value wins, and leaving a block restores the outer."""

import threading

import chargeback_client
from chargeback_client.context import current_tags, current_tenant


def test_tag_blocks_nest_and_restore_on_exit():
    with chargeback_client.tags(feature="search", team="core"):
        with chargeback_client.tags({"team.name": "ranking"}, feature="rerank", attempt=2):
            assert current_tags() == {
                "feature": "rerank",
                "team": "core",
                "team.name": "ranking",
                "attempt": "2",
            }
        assert current_tags() == {"feature": "search", "team": "core"}
    assert current_tags() == {}


def test_one_tags_instance_may_be_entered_inside_itself():
    search = chargeback_client.tags(feature="search")
    with search, chargeback_client.tags(feature="other"), search:
        assert current_tags() == {"feature": "search"}
    assert current_tags() == {}


def test_tenant_blocks_nest_and_do_not_leak_into_other_threads():
    seen_by_other_thread = []
    with chargeback_client.tenant("acme"):
        with chargeback_client.tenant("globex"):
            assert current_tenant() == "globex"
            other = threading.Thread(target=lambda: seen_by_other_thread.append(current_tenant()))
            other.start()
            other.join()
        assert current_tenant() == "acme"
    assert current_tenant() is None
    assert seen_by_other_thread == [None]
