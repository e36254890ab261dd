"""The Ansible role's Zabbix API part against each real Zabbix server of the e2e (6.0 and 7.0 LTS):
run by ansible-playbook on this machine (connection local), it imports the template and links it
to a host; a second run changes nothing."""

import os
import re
import subprocess
import textwrap

import pytest

from zabbix_hosts import delete_hosts

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = "tcp-lld-ansible"
GROUP = "tcp-lld e2e"
TEMPLATE_NAME = "TCP ports by Zabbix agent"

pytestmark = [pytest.mark.deploy,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the Zabbix stack")]


def playbook(tmp_path, api_url: str) -> list:
    path = tmp_path / "api.yml"
    path.write_text(textwrap.dedent("""\
        - name: Link the tcp-lld template through the Zabbix API
          hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - name: The role's API tasks only (the package is the other test's business)
              ansible.builtin.include_role:
                name: tcp_lld
                tasks_from: zabbix_api.yml
        """))
    return ["ansible-playbook", "-i", "localhost,", str(path),
            "-e", f"tcp_lld_zabbix_api_url={api_url}", "-e", "tcp_lld_zabbix_api_user=Admin",
            "-e", "tcp_lld_zabbix_api_password=zabbix", "-e", f"tcp_lld_zabbix_host={HOST}"]


def run(command: list) -> str:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": os.path.join(REPO, "deploy", "ansible", "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


def changed(output: str) -> int:
    return int(re.search(r"^localhost\s+:.*\bchanged=(\d+)", output, re.M)[1])


@pytest.fixture
def bare_host(api):
    """A host with an agent interface and no template, deleted afterwards."""
    old = api.host.get(filter={"host": HOST}, output=["hostid"])
    if old:
        delete_hosts(api, [host["hostid"] for host in old])
    groups = api.hostgroup.get(filter={"name": GROUP}, output=["groupid"])
    groupid = groups[0]["groupid"] if groups else api.hostgroup.create(name=GROUP)["groupids"][0]
    hostid = api.host.create(host=HOST, groups=[{"groupid": groupid}], interfaces=[
        {"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": "10050"}])["hostids"][0]
    yield hostid
    delete_hosts(api, [hostid])


def test_role_imports_and_links_the_template(api, zabbix_stack, bare_host, tmp_path):
    command = playbook(tmp_path, zabbix_stack.api_url)
    first = run(command)
    print(first[-2000:])
    linked = api.host.get(hostids=[bare_host], selectParentTemplates=["host"], output=["hostid"])
    assert [template["host"] for template in linked[0]["parentTemplates"]] == [TEMPLATE_NAME]
    assert changed(first) == 1, first  # the link; an import does not say whether it changed
    assert changed(run(command)) == 0
