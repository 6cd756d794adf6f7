#!/usr/bin/env python3
"""clearing-pycheck's configuration discovery (tools/pycheck), on the host: each tool's
configuration files in the order the tool reads them, what the check then runs, the coverage
threshold a project sets, --no-config (python-strict), and clear refusals of bad configuration.
Runs the helper's `discover` on small trees written by the test (it is pure Python; no tool runs).

usage: test_pycheck.py SOURCE-ROOT
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
HELPER = os.path.join(os.path.abspath(ROOT), 'tools', 'pycheck', 'clearing-pycheck')


class Discover(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='pycheck-')
        self.dir = self.tmp.name
        # a stand-in clearing-ruff on PATH (the lint check looks for it)
        self.bin = os.path.join(self.dir, '.bin')
        os.mkdir(self.bin)
        stub = os.path.join(self.bin, 'clearing-ruff')
        with open(stub, 'w') as f:
            f.write('#!/bin/sh\nexit 0\n')
        os.chmod(stub, 0o755)
        self.tree = os.path.join(self.dir, 'project')
        os.mkdir(self.tree)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        with open(os.path.join(self.tree, name), 'w') as f:
            f.write(text)

    def run_helper(self, *args, ruff=True):
        env = dict(os.environ, PATH=(self.bin + ':' if ruff else '') + '/usr/bin:/bin')
        return subprocess.run([sys.executable, HELPER, *args], cwd=self.tree, env=env,
                              capture_output=True, text=True, timeout=60)

    def discover(self, check, *args, ruff=True):
        p = self.run_helper('discover', check, *args, ruff=ruff)
        self.assertEqual(p.returncode, 0, p.stderr)
        d = json.loads(p.stdout)
        return d['info'], d['steps']

    # ---- no configuration: the profile's defaults ----
    def test_defaults(self):
        info, steps = self.discover('types')
        self.assertEqual(info['tool'], 'mypy')  # control: the helper answered
        self.assertIsNone(info['config'])
        self.assertEqual(steps, [['mypy', '--cache-dir=/tmp/mypy-cache',
                                  '--ignore-missing-imports', '.']])
        info, steps = self.discover('security')
        self.assertIsNone(info['config'])
        self.assertEqual(steps[0][:8], ['bandit', '-r', '.', '-q', '-f', 'json', '-o',
                                        '/tmp/bandit.json'])
        self.assertNotIn('-s', steps[0])
        info, steps = self.discover('tests', '--report', '/tmp/c.json')
        self.assertIsNone(info['config'])
        self.assertIsNone(info['coverage_min'])
        self.assertIn('--source=.', steps[0])
        self.assertIn('/tmp/c.json', steps[1])
        info, steps = self.discover('lint')
        self.assertEqual((info['tool'], info['config']), ('ruff', None))
        self.assertEqual(steps[0], ['clearing-ruff', 'check', '.'])

    def test_lint_falls_back_to_flake8(self):
        info, steps = self.discover('lint', ruff=False)
        self.assertEqual(info['tool'], 'flake8')
        self.assertEqual(steps[0][0], 'flake8')

    # ---- each tool's files, in its own order ----
    def test_ruff_order(self):
        self.write('pyproject.toml', '[tool.ruff]\nline-length = 90\n')
        self.assertEqual(self.discover('lint')[0]['config'], 'pyproject.toml')
        self.write('ruff.toml', 'line-length = 90\n')
        self.assertEqual(self.discover('lint')[0]['config'], 'ruff.toml')
        self.write('.ruff.toml', 'line-length = 90\n')
        self.assertEqual(self.discover('lint')[0]['config'], '.ruff.toml')

    def test_mypy_order_and_files(self):
        self.write('setup.cfg', '[mypy]\nfiles = src/a.py,\n  src/b\n')
        info, steps = self.discover('types')
        self.assertEqual(info['config'], 'setup.cfg')
        # files in the configuration: mypy takes them from there, no '.' target
        self.assertEqual(steps[0], ['mypy', '--cache-dir=/tmp/mypy-cache', '--config-file',
                                    'setup.cfg'])
        self.write('pyproject.toml', '[tool.mypy]\nstrict = true\n')
        info, steps = self.discover('types')
        self.assertEqual(info['config'], 'pyproject.toml')
        self.assertEqual(steps[0][-1], '.')  # no files: the whole tree
        self.write('.mypy.ini', '[mypy]\n')
        self.assertEqual(self.discover('types')[0]['config'], '.mypy.ini')
        self.write('mypy.ini', '[other]\n')  # no [mypy]: not mypy's configuration
        self.assertEqual(self.discover('types')[0]['config'], '.mypy.ini')
        self.write('mypy.ini', '[mypy]\nfiles = pkg\n')
        info, steps = self.discover('types')
        self.assertEqual(info['config'], 'mypy.ini')
        self.assertNotIn('.', steps[0])

    def test_bandit(self):
        self.write('.bandit', '[bandit]\nskips = B101,B311\nexclude = build\n')
        info, steps = self.discover('security')
        self.assertEqual(info['config'], '.bandit')
        argv = steps[0]
        self.assertEqual(argv[argv.index('-s') + 1], 'B101,B311')
        self.assertEqual(argv[argv.index('-x') + 1], './.venv,./build')
        self.write('pyproject.toml', '[tool.bandit]\nskips = ["B404"]\ntests = ["B602"]\n'
                                     'exclude_dirs = ["tests", "./docs"]\n')
        info, steps = self.discover('security')
        self.assertEqual(info['config'], 'pyproject.toml')
        argv = steps[0]
        self.assertEqual(argv[argv.index('-s') + 1], 'B404')
        self.assertEqual(argv[argv.index('-t') + 1], 'B602')
        self.assertEqual(argv[argv.index('-x') + 1], './.venv,./tests,./docs')
        # nosec comments are bandit's own: the helper never passes --ignore-nosec
        self.assertNotIn('--ignore-nosec', argv)

    def test_pytest_order(self):
        self.write('tox.ini', '[tox]\nenvlist = py311\n')  # no [pytest]: not pytest's
        self.assertIsNone(self.discover('tests')[0]['config'])
        self.write('setup.cfg', '[tool:pytest]\naddopts = -x\n')
        self.assertEqual(self.discover('tests')[0]['config'], 'setup.cfg')
        self.write('tox.ini', '[pytest]\naddopts = -x\n')
        self.assertEqual(self.discover('tests')[0]['config'], 'tox.ini')
        self.write('pyproject.toml', '[tool.pytest.ini_options]\naddopts = "-x"\n')
        self.assertEqual(self.discover('tests')[0]['config'], 'pyproject.toml')
        self.write('pytest.ini', '[pytest]\n')
        self.assertEqual(self.discover('tests')[0]['config'], 'pytest.ini')

    def test_coverage_threshold(self):
        self.write('pyproject.toml', '[tool.coverage.run]\nsource = ["src"]\n'
                                     '[tool.coverage.report]\nfail_under = 60\n'
                                     '[tool.pytest.ini_options]\n')
        info, steps = self.discover('tests')
        self.assertEqual(info['config'], 'pyproject.toml')  # pytest's and coverage's, once
        self.assertEqual(info['coverage_min'], 60)
        self.assertIn('--rcfile=pyproject.toml', steps[0])
        self.assertNotIn('--source=.', steps[0])  # the project names its source
        self.write('tox.ini', '[coverage:report]\nfail_under = 70.5\n')
        info, steps = self.discover('tests')
        self.assertEqual(info['config'], 'pyproject.toml, tox.ini')
        self.assertEqual(info['coverage_min'], 70.5)
        self.assertIn('--source=.', steps[0])
        self.write('setup.cfg', '[coverage:run]\nbranch = true\n')  # no fail_under
        info, _ = self.discover('tests')
        self.assertEqual(info['config'], 'pyproject.toml, setup.cfg')
        self.assertIsNone(info['coverage_min'])
        self.write('.coveragerc', '[report]\nfail_under = 90\n')
        info, steps = self.discover('tests')
        self.assertEqual(info['coverage_min'], 90)
        self.assertIn('--rcfile=.coveragerc', steps[1])

    def test_no_config(self):
        self.write('pyproject.toml', '[tool.mypy]\nfiles = ["a"]\n[tool.bandit]\nskips = ["B101"]\n'
                                     '[tool.coverage.report]\nfail_under = 10\n[tool.ruff]\n')
        self.assertEqual(self.discover('types')[0]['config'], 'pyproject.toml')  # control
        empty = '/tmp/.clearing-pycheck-empty.ini'
        for check in ('lint', 'types', 'security', 'tests'):
            info, steps = self.discover(check, '--no-config')
            self.assertIsNone(info['config'], check)
            self.assertIsNone(info['coverage_min'], check)
            self.assertNotIn('-s', steps[0])
            # the tools that would find the project's files themselves are told not to
            self.assertTrue('--isolated' in steps[0] or empty in ' '.join(steps[0]), steps)
        self.assertIn('--isolated', self.discover('lint', '--no-config')[1][1])
        _, steps = self.discover('tests', '--no-config')
        self.assertIn('--rcfile=' + empty, steps[1])
        self.assertIn('--source=.', steps[0])
        # pytest's own configuration still counts (the tests need it) and is named
        self.write('pytest.ini', '[pytest]\n')
        self.assertEqual(self.discover('tests', '--no-config')[0]['config'], 'pytest.ini')

    # ---- refusals: a clear message, status 2 ----
    def test_refusals(self):
        self.write('.coveragerc', '[report]\nfail_under = lots\n')
        p = self.run_helper('discover', 'tests')
        self.assertEqual(p.returncode, 2)
        self.assertIn(".coveragerc: fail_under must be a number, not 'lots'", p.stderr)
        self.write('.coveragerc', '[report]\nfail_under = 120\n')
        p = self.run_helper('discover', 'tests')
        self.assertEqual(p.returncode, 2)
        self.assertIn('fail_under must be from 0 to 100', p.stderr)
        os.unlink(os.path.join(self.tree, '.coveragerc'))
        self.write('pyproject.toml', '[tool.mypy\n')
        p = self.run_helper('discover', 'types')
        self.assertEqual(p.returncode, 2)
        self.assertIn('clearing-pycheck: pyproject.toml:', p.stderr)
        p = self.run_helper('discover', 'cobol')
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown check 'cobol'", p.stderr)
        p = self.run_helper('types', '--bogus')
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown argument '--bogus'", p.stderr)
        p = self.run_helper()
        self.assertEqual(p.returncode, 2)
        self.assertIn('usage:', p.stderr)

    def test_info_file_and_missing_tool(self):
        info = os.path.join(self.dir, 'info.json')
        self.write('setup.cfg', '[mypy]\n')
        env = dict(os.environ, PATH=self.bin)  # no mypy on this PATH
        p = subprocess.run([sys.executable, HELPER, 'types', '--info', info], cwd=self.tree,
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 127, p.stderr)
        self.assertIn('clearing-pycheck: cannot run mypy', p.stderr)
        with open(info) as f:
            written = json.load(f)
        self.assertEqual((written['check'], written['tool'], written['config']),
                         ('types', 'mypy', 'setup.cfg'))


if __name__ == '__main__':
    unittest.main(verbosity=2)
