"""gpunet.env.setting: os.environ.get's answer, current after every change made through os.environ."""
import os

from gpunet import env


def test_setting_follows_every_change_to_the_environment(monkeypatch):
    name = "GPUNET_TEST_SETTING"
    monkeypatch.delenv(name, raising=False)
    assert env.setting(name) is None and env.setting(name, "default") == "default"
    monkeypatch.setenv(name, "avx2")
    assert env.setting(name) == os.environ.get(name) == "avx2"
    os.environ[name] = "ünïcode"
    assert env.setting(name) == "ünïcode"
    del os.environ[name]
    assert env.setting(name, "gone") == "gone"
    monkeypatch.setenv(name, "")
    assert env.setting(name, "default") == ""  # set but empty is not unset, as os.environ.get says
