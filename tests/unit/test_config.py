"""Settings: defaults from the contract, and errors that name the setting."""

import pytest

from gateway.config import MIB, load_settings
from gateway.core.errors import ConfigError


def test_defaults_follow_the_contract() -> None:
    s = load_settings({"HOME": "/home/ann"})
    assert s.storage == "local:/home/ann/.local/share/scangw"
    assert s.max_message_bytes == 35 * MIB
    assert (s.cloud, s.graph_url, s.graph_scope) == (
        "public",
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/.default",
    )
    assert (s.mailbox_rate_per_min, s.max_attempts, s.max_age_hours) == (30, 50, 24)
    assert (s.keep_sent_hours, s.keep_failed_days, s.keep_jobs_days, s.link_hours) == (0, 7, 30, 0)
    assert s.smtp_require_tls_auth is False


def test_the_default_store_follows_xdg_data_home_and_never_the_current_folder() -> None:
    s = load_settings({"HOME": "/home/ann", "XDG_DATA_HOME": "/srv/data"})
    assert (s.storage, s.store_label) == ("local:/srv/data/scangw", "/srv/data/scangw")
    assert load_settings({"HOME": "/home/ann", "XDG_DATA_HOME": "relative"}).storage.startswith("local:/home/ann/")
    assert load_settings({"HOME": "/h", "SCANGW_STORAGE": "local:/var/lib/scangw"}).store_label == "/var/lib/scangw"


@pytest.mark.parametrize(
    ("cloud", "graph", "upload_sessions"),
    [
        ("public", "https://graph.microsoft.com", True),
        ("usgov", "https://graph.microsoft.us", False),
        ("usgovdod", "https://dod-graph.microsoft.us", False),
        ("china", "https://microsoftgraph.chinacloudapi.cn", True),
    ],
)
def test_cloud_picks_endpoint_and_scope(cloud: str, graph: str, upload_sessions: bool) -> None:
    s = load_settings({"SCANGW_CLOUD": cloud})
    assert s.graph_base_url == f"{graph}/v1.0"
    assert s.graph_scope == f"{graph}/.default"
    assert s.upload_sessions_available is upload_sessions


def test_graph_url_overrides_only_the_base_url() -> None:
    s = load_settings({"SCANGW_CLOUD": "usgov", "SCANGW_GRAPH_URL": "http://127.0.0.1:9999/"})
    assert s.graph_base_url == "http://127.0.0.1:9999/v1.0"
    assert s.graph_scope == "https://graph.microsoft.us/.default"


def test_identity_based_storage_uses_the_functions_names() -> None:
    s = load_settings(
        {
            "SCANGW_STORAGE__blobServiceUri": "https://acct.blob.core.windows.net",
            "SCANGW_STORAGE__queueServiceUri": "https://acct.queue.core.windows.net",
            "SCANGW_STORAGE__tableServiceUri": "https://acct.table.core.windows.net",
            "SCANGW_STORAGE__credential": "managedidentity",
            "SCANGW_STORAGE__clientId": "1111",
        }
    )
    assert s.storage_identity is not None and s.storage_identity.client_id == "1111"
    assert s.local_dir is None


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SCANGW_MAX_MESSAGE_MB": "151"}, "SCANGW_MAX_MESSAGE_MB"),
        ({"SCANGW_MAX_MESSAGE_MB": "big"}, "SCANGW_MAX_MESSAGE_MB"),
        ({"SCANGW_CLOUD": "mars"}, "SCANGW_CLOUD"),
        ({"SCANGW_GRAPH_URL": "https://graph.example/v1.0"}, "SCANGW_GRAPH_URL"),
        ({"SCANGW_SENDER": "not-an-address"}, "SCANGW_SENDER"),
        ({"SCANGW_SMTP_TLS_CERT": "/nonexistent.pem"}, "SCANGW_SMTP_TLS_KEY"),
        ({"SCANGW_LINK_HOURS": "169"}, "SCANGW_LINK_HOURS"),
        ({"SCANGW_SMTP_PROXY_CIDRS": "10.0.0.0/33"}, "SCANGW_SMTP_PROXY_CIDRS"),
        ({"SCANGW_STORAGE": "https://nope"}, "SCANGW_STORAGE"),
        ({"SCANGW_STORAGE__blobServiceUri": "https://a"}, "SCANGW_STORAGE__*"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert err.value.setting == setting
    assert setting in str(err.value)
