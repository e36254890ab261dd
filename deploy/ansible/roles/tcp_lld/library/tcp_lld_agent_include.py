#!/usr/bin/python3
"""Ansible module: make a Zabbix agent config include tcp-lld.conf exactly once.

The package installs the same keys into every include directory an agent may read, so an agent
whose Include= lines match two of them would refuse to start (a UserParameter defined twice), and
one whose Include= lines match none would not have the keys. Include= takes a file, a directory
(every file in it) or a glob, relative paths being relative to the config's directory, e.g.

    Include=/etc/zabbix/zabbix_agentd.conf.d/*.conf     matches .../zabbix_agentd.conf.d/tcp-lld.conf
    Include=./zabbix_agent2.d/plugins.d/*.conf          matches nothing of tcp-lld
"""

from __future__ import annotations

import fnmatch
import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: tcp_lld_agent_include
short_description: Make a Zabbix agent config include tcp-lld.conf exactly once
options:
  config: {description: the agent's configuration file, required: true, type: path}
  files: {description: the tcp-lld.conf copies the package installs for this agent, required: true, type: list, elements: path}
  include: {description: the file to add an Include= line for when none is included, required: true, type: path}
"""

INCLUDE_LINE = re.compile(r"^\s*Include\s*=\s*(.*?)\s*$")


def included(config: str, value: str, candidate: str) -> bool:
    """Whether the agent's `Include=value` (in `config`) reads the file `candidate`."""
    path = value if os.path.isabs(value) else os.path.normpath(os.path.join(os.path.dirname(config), value))
    if any(char in path for char in "*?["):
        return fnmatch.fnmatchcase(candidate, path) and "/" not in candidate[len(os.path.dirname(path)) + 1:]
    if value.endswith("/") or os.path.isdir(path):
        return os.path.dirname(candidate) == path.rstrip("/")
    return candidate == path


def main() -> None:
    module = AnsibleModule(
        argument_spec={"config": {"type": "path", "required": True},
                       "files": {"type": "list", "elements": "path", "required": True},
                       "include": {"type": "path", "required": True}},
        supports_check_mode=True,
    )
    config, files, include = module.params["config"], module.params["files"], module.params["include"]
    try:
        with open(config, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as error:
        module.fail_json(msg=f"cannot read {config}: {error}")
    values = [match.group(1) for match in map(INCLUDE_LINE.match, text.splitlines()) if match]
    matched = sorted({candidate for candidate in files for value in values if included(config, value, candidate)})
    if len(matched) > 1:
        module.fail_json(msg=f"{config} includes {len(matched)} copies of the tcp-lld keys ({', '.join(matched)}): "
                             "the agent refuses a key defined twice; keep one Include=", included=matched)
    if matched:
        module.exit_json(changed=False, included=matched)
    addition = f"# tcp-lld agent keys (added by the tcp_lld Ansible role)\nInclude={include}\n"
    if not module.check_mode:
        with open(config, "a", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(("" if text.endswith("\n") or not text else "\n") + addition)
    module.exit_json(changed=True, included=[include], diff={"before": text, "after": text + addition})


if __name__ == "__main__":
    main()
