#!/usr/bin/env python3
"""The package's /etc/clearing/config.json (debian/clearing.config.json) writes out every key the
daemon's loader reads (src/cmd_serve.c) and every default limit (src/cli_limits.c), no other,
and `clearing serve` accepts it. null stands for "not set" only where the default is unset.

Usage: packaged_config.py CLEARING SOURCE_ROOT"""
import json
import os
import re
import subprocess
import sys
import tempfile

clearing, root = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


src = open(os.path.join(root, "src/cmd_serve.c")).read()
# The tenants' quota keys are a tenant's, not the file's: leave config_tenants out.
start = src.index("static int config_tenants(")
end = src.index("\n}\n", start)
top = src[:start] + src[end:]
loader = set(re.findall(r'strcmp\(key, "([a-z_]+)"\)', top))
loader |= set(re.findall(r'\{"([a-z_]+)", (?:&c->svc\.|\d)', top))
check(len(loader) >= 30, "the loader's keys were found in cmd_serve.c (%d)" % len(loader))

path = os.path.join(root, "debian/clearing.config.json")
cfg = json.load(open(path))
check(set(cfg) == loader, "config.json has exactly the loader's keys (missing: %s, unknown: %s)"
      % (sorted(loader - set(cfg)), sorted(set(cfg) - loader)))

limits_src = open(os.path.join(root, "src/cli_limits.c")).read()
limit_names = {n.replace("-", "_") for n in
               re.findall(r'\{"([a-z-]+)", required_argument, NULL, CLI_OPT_', limits_src)}
check(len(limit_names) >= 9, "the limit options were found in cli_limits.c (%d)" % len(limit_names))
check(set(cfg.get("limits", {})) == limit_names,
      "config.json's limits are every limit option (missing: %s, unknown: %s)"
      % (sorted(limit_names - set(cfg.get("limits", {}))),
         sorted(set(cfg.get("limits", {})) - limit_names)))


def serve_accepts(conf):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(conf, f)
    try:
        # --help after --config: the file is read and checked, nothing starts.
        r = subprocess.run([clearing, "serve", "--config", f.name, "--help"],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stderr
    finally:
        os.unlink(f.name)


rc, err = serve_accepts(cfg)
check(rc == 0, "clearing serve accepts the packaged configuration (exit %d: %s)" % (rc, err.strip()))
# Positive and negative controls: the checker sees a bad file, and null is refused where the
# key has a value by default.
rc, err = serve_accepts(dict(cfg, no_such_key=1))
check(rc == 2 and "unknown key 'no_such_key'" in err, "an unknown key is refused (exit %d)" % rc)
for key in ("socket", "socket_mode", "max_sandboxes", "audit_syslog"):
    rc, err = serve_accepts(dict(cfg, **{key: None}))
    check(rc == 2 and key in err, "null for %s is refused (exit %d: %s)" % (key, rc, err.strip()))
nullable = [k for k, v in cfg.items() if v is None]
check(len(nullable) >= 4, "the file leaves keys unset with null (%s)" % nullable)
for key in ("socket_owner", "socket_group", "tcp_address", "token_file", "state_dir", "db_path",
            "docker_host", "image", "gauntlet_ref", "verdict_key", "insecure_runtime", "audit_log"):
    rc, err = serve_accepts(dict(cfg, **{key: None}))
    check(rc == 0, "null for %s means its default (exit %d: %s)" % (key, rc, err.strip()))
sys.exit(1 if failures else 0)
