"""Config loading: defaults, the shipped file, precedence, and every kind of rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kms_host.addresses import ListenAddress, parse_listen
from kms_host.cli.main import main
from kms_host.config import (
    Config,
    ConfigOverrides,
    CountingMode,
    Prefill,
    load_config,
)
from kms_host.discovery.settings import parse_host_port
from kms_host.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "kms-host.toml"
NO_CLI = ConfigOverrides()


def load(
    text: str | None = None,
    *,
    tmp_path: Path | None = None,
    env: dict[str, str] | None = None,
    cli: ConfigOverrides = NO_CLI,
) -> Config:
    path = None
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "kms-host.toml"
        path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {}, overrides=cli)


def rejected(
    text: str | None = None,
    *,
    tmp_path: Path | None = None,
    env: dict[str, str] | None = None,
    cli: ConfigOverrides = NO_CLI,
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path=tmp_path, env=env, cli=cli)
    return info.value


# --- defaults and the shipped file ------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    config = load()
    assert config == Config()
    assert config.server.listen == ()
    assert config.server.idle_timeout_s == 30.0
    assert config.server.max_pdu_bytes == 4096
    assert config.server.max_connections == 1024
    assert config.server.exchange_timeout_s == 30.0
    assert config.server.max_connections_per_peer == 0
    assert config.server.peer_connection_rate_per_s == 0.0
    assert config.server.peer_connection_burst == 100
    assert config.server.peer_request_rate_per_s == 0.0
    assert config.server.peer_request_burst == 100
    assert config.server.shutdown_grace_s == 5.0
    assert config.server.ndr64 is True
    assert config.server.btfn is True
    assert config.server.workers == 1
    assert config.server.event_loop == "auto"
    assert config.host.scope == ("all",)
    assert dict(config.host.epid) == {}
    assert config.host.hwid == ""
    assert (config.host.activation_interval_min, config.host.renewal_interval_min) == (120, 10080)
    assert (config.host.build, config.host.lcid) == (17763, 1033)
    assert config.policy.refuse_unknown is False
    assert config.policy.strict_sku is False
    assert config.policy.check_client_time is True
    assert config.policy.clock_skew_max_s == 14400
    assert config.policy.max_required_client_count == 1000
    assert config.policy.verify_v4_mac is True
    assert config.counting.mode is CountingMode.FAITHFUL
    assert config.counting.fixed_count == 50
    assert config.counting.prefill is Prefill.THRESHOLD
    assert config.counting.window_days == 30
    assert config.storage.backend == "sqlite"
    assert config.storage.data_dir == Path("data")
    assert config.storage.synchronous == "full"
    assert (config.log.format, config.log.level) == ("auto", "info")


def test_shipped_file_yields_the_defaults() -> None:
    assert load_config(SHIPPED, env={}, overrides=NO_CLI) == Config()


def test_shipped_file_has_every_key(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    for section, options in Config().as_dict().items():
        assert f"[{section}]" in text
        for key, value in options.items():
            if value is None:  # unset by default: a key set to "" or a sub-table shown commented
                assert f"\n{key} = " in text or f"[{section}.{key}]" in text, f"{section}.{key}"
                continue
            assert f"\n{key} = " in text, f"{section}.{key} missing from the shipped config"


def test_config_file_from_environment_when_no_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[counting]\nmode = 'fixed'\n", encoding="utf-8")
    config = load_config(None, env={"KMS_HOST_CONFIG": str(path)}, overrides=NO_CLI)
    assert config.counting.mode is CountingMode.FIXED


def test_explicit_path_wins_over_kms_host_config(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[log]\nlevel = 'debug'\n", encoding="utf-8")
    env = {"KMS_HOST_CONFIG": str(tmp_path / "missing.toml")}
    assert load_config(explicit, env=env, overrides=NO_CLI).log.level == "debug"


def test_as_dict_is_json_safe() -> None:
    config = load(
        env={
            "KMS_HOST_SERVER_LISTEN": "[::1]:1688",
            "KMS_HOST_HOST_EPID": '{ "windows-server-2019" = "x" }',
        }
    )
    data = json.loads(json.dumps(config.as_dict()))
    assert data["server"]["listen"] == ["[::1]:1688"]
    assert data["host"]["epid"] == {"windows-server-2019": "x"}
    assert data["host"]["scope"] == ["all"]
    assert data["counting"]["mode"] == "faithful"
    assert data["storage"]["data_dir"] == "data"


# --- precedence -------------------------------------------------------------------------------


def test_file_then_env_then_cli(tmp_path: Path) -> None:
    text = """
        [server]
        listen = ["127.0.0.1:1688"]
        idle_timeout_s = 10
        [log]
        level = "warning"
        format = "json"
        [storage]
        data_dir = "/srv/from-file"
    """
    env = {"KMS_HOST_SERVER_IDLE_TIMEOUT_S": "20", "KMS_HOST_LOG_LEVEL": "error"}
    from_file = load(text, tmp_path=tmp_path)
    assert from_file.server.idle_timeout_s == 10.0
    assert from_file.log.level == "warning"

    from_env = load(text, tmp_path=tmp_path, env=env)
    assert from_env.server.idle_timeout_s == 20.0
    assert from_env.log.level == "error"
    assert from_env.log.format == "json"  # untouched keys keep the file's value

    cli = ConfigOverrides(
        listen=("[::]:1688", "0.0.0.0:1689"),
        data_dir=Path("/srv/from-cli"),
        log_format="console",
        log_level="debug",
    )
    from_cli = load(text, tmp_path=tmp_path, env=env, cli=cli)
    assert from_cli.server.listen == (ListenAddress("::", 1688), ListenAddress("0.0.0.0", 1689))
    assert from_cli.storage.data_dir == Path("/srv/from-cli")
    assert (from_cli.log.format, from_cli.log.level) == ("console", "debug")
    assert from_cli.server.idle_timeout_s == 20.0


def test_workers_flag_wins_over_env_and_file(tmp_path: Path) -> None:
    env = {"KMS_HOST_SERVER_WORKERS": "3"}
    assert load("[server]\nworkers = 2\n", tmp_path=tmp_path).server.workers == 2
    assert load("[server]\nworkers = 2\n", tmp_path=tmp_path, env=env).server.workers == 3
    flag = ConfigOverrides(workers=4)
    assert load("[server]\nworkers = 2\n", tmp_path=tmp_path, env=env, cli=flag).server.workers == 4


@pytest.mark.parametrize("workers", [0, 65, -1])
def test_workers_flag_out_of_range_names_key_and_flag(workers: int) -> None:
    error = rejected(cli=ConfigOverrides(workers=workers))
    assert error.key == "server.workers"
    assert "from 1 to 64" in str(error)
    assert "--workers" in str(error)


def test_event_loop_from_file_and_env(tmp_path: Path) -> None:
    assert load('[server]\nevent_loop = "asyncio"\n', tmp_path=tmp_path).server.event_loop == (
        "asyncio"
    )
    env = {"KMS_HOST_SERVER_EVENT_LOOP": "uvloop"}
    assert load(env=env).server.event_loop == "uvloop"


@pytest.mark.parametrize("value", ['"trio"', '"UVLOOP"', "true", '""'])
def test_event_loop_must_be_a_known_one(value: str, tmp_path: Path) -> None:
    error = rejected(f"[server]\nevent_loop = {value}\n", tmp_path=tmp_path)
    assert error.key == "server.event_loop"
    assert "'auto', 'asyncio', 'uvloop'" in str(error)


def test_empty_cli_listen_keeps_the_configured_one() -> None:
    config = load(env={"KMS_HOST_SERVER_LISTEN": "127.0.0.1:0"}, cli=ConfigOverrides(listen=()))
    assert config.server.listen == (ListenAddress("127.0.0.1", 0),)


@pytest.mark.parametrize(
    ("name", "value", "section", "key", "expected"),
    [
        ("KMS_HOST_COUNTING_MODE", "saturated", "counting", "mode", CountingMode.SATURATED),
        ("KMS_HOST_COUNTING_MODE", '"fixed"', "counting", "mode", CountingMode.FIXED),
        ("KMS_HOST_SERVER_IDLE_TIMEOUT_S", "10", "server", "idle_timeout_s", 10.0),
        ("KMS_HOST_SERVER_IDLE_TIMEOUT_S", "2.5", "server", "idle_timeout_s", 2.5),
        ("KMS_HOST_SERVER_NDR64", "false", "server", "ndr64", False),
        ("KMS_HOST_SERVER_WORKERS", "4", "server", "workers", 4),
        ("KMS_HOST_HOST_BUILD", "20348", "host", "build", 20348),
        (
            "KMS_HOST_HOST_SCOPE",
            "windows-server-2019,office-2019",
            "host",
            "scope",
            ("windows-server-2019", "office-2019"),
        ),
        ("KMS_HOST_HOST_SCOPE", '["office-2016"]', "host", "scope", ("office-2016",)),
        ("KMS_HOST_HOST_HWID", "1234567890123456", "host", "hwid", "1234567890123456"),
        ("KMS_HOST_HOST_HWID", "3A1C049600B60076", "host", "hwid", "3A1C049600B60076"),
        (
            "KMS_HOST_STORAGE_DATA_DIR",
            "/var/lib/kms-host",
            "storage",
            "data_dir",
            Path("/var/lib/kms-host"),
        ),
        (
            "KMS_HOST_SERVER_LISTEN",
            "[::]:1688, 0.0.0.0:1688",
            "server",
            "listen",
            (ListenAddress("::", 1688), ListenAddress("0.0.0.0", 1688)),
        ),
        ("KMS_HOST_SERVER_LISTEN", "", "server", "listen", ()),
    ],
)
def test_environment_values(
    name: str, value: str, section: str, key: str, expected: object
) -> None:
    config = load(env={name: value})
    assert getattr(getattr(config, section), key) == expected


def test_environment_epid_table() -> None:
    config = load(env={"KMS_HOST_HOST_EPID": '{ "office-2019" = "06401-00206-471-1-03-1033" }'})
    assert dict(config.host.epid) == {"office-2019": "06401-00206-471-1-03-1033"}


def test_other_environment_variables_are_ignored() -> None:
    assert load(env={"PATH": "/bin", "KMS_HOSTNAME": "x", "kms_host_log_level": "x"}) == Config()
    assert load(env={"KMS_HOST_MYPYC": "1"}) == Config()  # the build's switch, not a setting


def test_env_value_cannot_smuggle_other_keys() -> None:
    error = rejected(env={"KMS_HOST_LOG_LEVEL": '"info"\nformat = "json"'})
    assert error.key == "log.level"


# --- rejections -------------------------------------------------------------------------------


def test_unknown_section_in_file(tmp_path: Path) -> None:
    error = rejected("[metrix]\nlisten = '127.0.0.1:9688'\n", tmp_path=tmp_path)
    assert error.key == "metrix"
    assert "unknown section" in str(error)
    assert rejected("[metric]\n", tmp_path=tmp_path).key == "metric"  # even when empty


def test_unknown_key_in_file(tmp_path: Path) -> None:
    error = rejected("[server]\nidle_timeout = 10\n", tmp_path=tmp_path)
    assert error.key == "server.idle_timeout"
    assert "unknown key" in str(error)
    assert "idle_timeout_s" in str(error)  # the known keys are listed


def test_top_level_key_in_file(tmp_path: Path) -> None:
    assert rejected("listen = []\n", tmp_path=tmp_path).key == "listen"


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    error = rejected("server = 1\n", tmp_path=tmp_path)
    assert error.key == "server"
    assert "table" in str(error)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("KMS_HOST_SERVER_IDLE_TIMEOUT", "server.idle_timeout"),
        ("KMS_HOST_SERVR_LISTEN", "servr.listen"),
        ("KMS_HOST_DEBUG", "debug"),
    ],
)
def test_unknown_environment_variable(name: str, key: str) -> None:
    error = rejected(env={name: "1"})
    assert error.key == key
    assert name in str(error)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(missing, env={}, overrides=NO_CLI)
    error = rejected("[server\n", tmp_path=tmp_path)
    assert error.key == ""
    assert "not valid TOML" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # type
        ("[server]\nidle_timeout_s = '30'", "server.idle_timeout_s", "expected a number"),
        ("[server]\nmax_pdu_bytes = 4096.0", "server.max_pdu_bytes", "expected an integer"),
        ("[server]\nmax_connections = true", "server.max_connections", "expected an integer"),
        ("[server]\nndr64 = 1", "server.ndr64", "expected true or false"),
        ("[server]\nworkers = 2.0", "server.workers", "expected an integer"),
        ("[server]\nworkers = true", "server.workers", "expected an integer"),
        ("[server]\nlisten = '0.0.0.0:1688'", "server.listen", "expected a list"),
        ("[server]\nlisten = [1688]", "server.listen", "'HOST:PORT' string"),
        ("[host]\nscope = 'all'", "host.scope", "non-empty list"),
        ("[host]\nepid = 'x'", "host.epid", "expected a table"),
        ("[storage]\ndata_dir = 5", "storage.data_dir", "non-empty path"),
        # range
        ("[server]\nidle_timeout_s = 0.5", "server.idle_timeout_s", "from 1 to 600"),
        ("[server]\nidle_timeout_s = nan", "server.idle_timeout_s", "from 1 to 600"),
        ("[server]\nmax_pdu_bytes = 1023", "server.max_pdu_bytes", "from 1024 to 65535"),
        ("[server]\nmax_connections = 0", "server.max_connections", "from 1 to 65536"),
        ("[server]\nexchange_timeout_s = 0", "server.exchange_timeout_s", "from 1 to 600"),
        ("[server]\nmax_connections_per_peer = -1", "server.max_connections_per_peer", "0 to"),
        ("[server]\npeer_connection_rate_per_s = -1", "server.peer_connection_rate_per_s", "0 to"),
        ("[server]\npeer_connection_burst = 0", "server.peer_connection_burst", "from 1 to"),
        ("[server]\npeer_request_rate_per_s = 1e6", "server.peer_request_rate_per_s", "0 to"),
        ("[server]\npeer_request_burst = 0", "server.peer_request_burst", "from 1 to"),
        ("[server]\nshutdown_grace_s = 301", "server.shutdown_grace_s", "from 0 to 300"),
        ("[server]\nworkers = 0", "server.workers", "from 1 to 64"),
        ("[server]\nworkers = 65", "server.workers", "from 1 to 64"),
        ("[host]\nactivation_interval_min = 14", "host.activation_interval_min", "15 to 43200"),
        ("[host]\nrenewal_interval_min = 43201", "host.renewal_interval_min", "15 to 43200"),
        ("[host]\nlcid = 0", "host.lcid", "from 1 to 65535"),
        ("[policy]\nclock_skew_max_s = 59", "policy.clock_skew_max_s", "from 60"),
        ("[policy]\nmax_required_client_count = 0", "policy.max_required_client_count", "from 1"),
        ("[counting]\nfixed_count = -1", "counting.fixed_count", "from 0 to 100000"),
        ("[counting]\nwindow_days = 3651", "counting.window_days", "from 1 to 3650"),
        # choice
        ("[counting]\nmode = 'exact'", "counting.mode", "'faithful', 'saturated', 'fixed'"),
        ("[counting]\nprefill = 'all'", "counting.prefill", "'threshold', 'none'"),
        ("[storage]\nbackend = 'postgres'", "storage.backend", "'sqlite'"),
        ("[storage]\nsynchronous = 'off'", "storage.synchronous", "'full', 'normal'"),
        ("[log]\nformat = 'text'", "log.format", "'auto', 'json', 'console'"),
        ("[log]\nlevel = 'critical'", "log.level", "'debug', 'info', 'warning', 'error'"),
        ("[host]\nbuild = 19041", "host.build", "17763"),
        # shape
        ("[host]\nscope = []", "host.scope", "non-empty list"),
        ("[host]\nscope = ['all', '']", "host.scope", "non-empty string"),
        ("[host]\nepid = { office-2019 = '' }", "host.epid", "'office-2019'"),
        ("[host]\nhwid = '12345'", "host.hwid", "16 hex digits"),
        ("[host]\nhwid = '3A1C049600B6007G'", "host.hwid", "16 hex digits"),
        ("[storage]\ndata_dir = ''", "storage.data_dir", "non-empty path"),
        ("[server]\nlisten = ['::1:1688']", "server.listen", "brackets"),
        ("[server]\nallow = ['10.0.0.0/33']", "server.allow", "'10.0.0.0/33'"),
        ("[server]\nallow = ['10.1.0.0/8']", "server.allow", "'10.1.0.0/8'"),
        ("[server]\nallow = ['lab.example']", "server.allow", "not a CIDR block"),
        ("[server]\nallow = []", "server.allow", '["any"]'),
        ("[server]\nallow = ['any', '10.0.0.0/8']", "server.allow", "alone"),
        ("[server]\nallow = '10.0.0.0/8'", "server.allow", "expected a list"),
        ("[server]\nproxy_protocol_from = ['any']", "server.proxy_protocol_from", "'any'"),
        ("[server]\nrefused_log_interval_s = 0", "server.refused_log_interval_s", "from 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    error = rejected(text, tmp_path=tmp_path)
    assert error.key == key
    assert fragment in str(error)
    assert "kms-host.toml" in str(error)  # where the value came from


def test_allow_lists_normalise_and_take_any_from_the_environment() -> None:
    config = load_config(
        None,
        env={
            "KMS_HOST_SERVER_ALLOW": "10.0.0.0/8, 2001:DB8::/32,192.0.2.7",
            "KMS_HOST_SERVER_PROXY_PROTOCOL_FROM": "10.0.0.5",
        },
        overrides=NO_CLI,
    )
    assert config.server.allow == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")
    assert config.server.proxy_protocol_from == ("10.0.0.5/32",)
    opened = load_config(None, env={"KMS_HOST_SERVER_ALLOW": "any"}, overrides=NO_CLI)
    assert opened.server.allow == ("any",)


def test_bad_environment_value_names_the_variable() -> None:
    error = rejected(env={"KMS_HOST_SERVER_MAX_CONNECTIONS": "lots"})
    assert error.key == "server.max_connections"
    assert "KMS_HOST_SERVER_MAX_CONNECTIONS" in str(error)


def test_bad_cli_value_names_the_flag() -> None:
    error = rejected(cli=ConfigOverrides(listen=("localhost",)))
    assert error.key == "server.listen"
    assert "--listen" in str(error)
    assert rejected(cli=ConfigOverrides(log_level="loud")).key == "log.level"


# --- listen addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("[::]:1688", "::", 1688),
        ("0.0.0.0:1688", "0.0.0.0", 1688),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::1]:65535", "::1", 65535),
        ("[fe80::1%eth0]:1688", "fe80::1%eth0", 1688),
        ("kms.lab.example:1688", "kms.lab.example", 1688),
        (" localhost:1688 ", "localhost", 1688),
    ],
)
def test_parse_listen(text: str, host: str, port: int) -> None:
    address = parse_listen(text)
    assert address == ListenAddress(host, port)
    assert parse_listen(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "1688",
        ":1688",
        "0.0.0.0",
        "0.0.0.0:",
        "0.0.0.0:65536",
        "0.0.0.0:-1",
        "0.0.0.0:http",
        "0.0.0.0:\u0661\u0666\u0668\u0668",  # Arabic-Indic digits are not a port
        "::1:1688",
        "[::1:1688",
        "[not-v6]:1688",
        "[1.2.3.4]:1688",
        "bad_host:1688",
    ],
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_listen(text)


@pytest.mark.parametrize(
    "text",
    [
        "ns1.lab.example:\u0661\u0666\u0668\u0668",  # digits, but not ASCII ones
        "::1:1688",
        "[::1:1688",
        "[192.0.2.1]:1688",
        ":1688",
        "192.0.2.1:",
        "192.0.2.1:65536",
    ],
)
def test_every_host_port_reader_rejects_the_same_text(text: str) -> None:
    """One grammar for listen addresses, the [dns] and ``activate`` servers and bench targets."""
    with pytest.raises(ValueError, match=r"."):
        parse_listen(text)
    with pytest.raises(ValueError, match=r"."):
        parse_host_port(text)
    with pytest.raises(SystemExit):
        main(["bench", text])


def test_dns_addresses_take_dns_names_and_ips() -> None:
    assert parse_host_port("[::1]:53") == ("::1", 53)
    assert parse_host_port("192.0.2.53:53", min_port=1) == ("192.0.2.53", 53)
    assert parse_host_port("ns_1.lab.example:5353") == ("ns_1.lab.example", 5353)
    with pytest.raises(ValueError, match="from 1 to 65535"):
        parse_host_port("192.0.2.53:0", min_port=1)
    with pytest.raises(ValueError, match="domain name"):
        parse_host_port("bad..name:53")


def test_listen_address_str() -> None:
    assert str(ListenAddress("::", 1688)) == "[::]:1688"
    assert str(ListenAddress("0.0.0.0", 1688)) == "0.0.0.0:1688"
