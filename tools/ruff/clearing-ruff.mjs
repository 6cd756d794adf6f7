#!/usr/bin/env node
// clearing-ruff: ruff (compiled to WebAssembly, @astral-sh/ruff-wasm-nodejs) run on a project by
// the project's own ruff configuration. It runs inside the python image (images/build.sh installs
// it under /opt/clearing/ruff), where the native ruff is not packaged.
//
//   clearing-ruff [check] [--output-format concise|json] [PATH...]
//   clearing-ruff format --check [--if-configured] [PATH...]
//
// --isolated reads no configuration file (ruff's defaults), as ruff's own flag does.
// Exit status: 0 clean, 1 findings (or files that would be reformatted), 2 usage or configuration
// error. The configuration is the closest of .ruff.toml, ruff.toml, pyproject.toml with
// [tool.ruff] (in that order within one directory) in the current directory or its parents;
// nested configuration files below it are not consulted.
import fs from 'node:fs';
import path from 'node:path';
import ruffWasm from '@astral-sh/ruff-wasm-nodejs';
import { parse as parseToml } from 'smol-toml';

const { Workspace, PositionEncoding } = ruffWasm;

class UsageError extends Error {}

const DEFAULT_EXCLUDE = [
    '.bzr', '.direnv', '.eggs', '.git', '.git-rewrite', '.hg', '.ipynb_checkpoints', '.mypy_cache',
    '.nox', '.pants.d', '.pyenv', '.pytest_cache', '.pytype', '.ruff_cache', '.svn', '.tox', '.venv',
    '.vscode', '__pypackages__', '_build', 'buck-out', 'build', 'dist', 'node_modules',
    'site-packages', 'venv',
];
// Notebooks and pyproject.toml (ruff's RUF200) are not checked by the WebAssembly build.
const DEFAULT_INCLUDE = ['*.py', '*.pyi'];
// ruff's command line default; the WebAssembly build's own default (its playground's) differs.
const DEFAULT_SELECT = ['E4', 'E7', 'E9', 'F'];
// Keys that choose files; they are applied here, not by the Workspace (which sees no paths).
const FILE_KEYS = ['include', 'extend-include', 'exclude', 'extend-exclude', 'respect-gitignore',
    'force-exclude', 'extend', 'src', 'cache-dir', 'output-format', 'fix', 'unsafe-fixes',
    'show-fixes', 'required-version', 'namespace-packages', 'builtins-dir'];
const LINT_PATH_KEYS = ['per-file-ignores', 'extend-per-file-ignores', 'exclude'];

// ---- globs ----

function globToRegExp(glob, starCrossesSlash = false) {
    let re = '';
    for (let i = 0; i < glob.length; i++) {
        const c = glob[i];
        if (c === '*' && glob[i + 1] === '*') {
            i++;
            if (glob[i + 1] === '/') {
                i++;
                re += '(?:.*/)?';
            } else {
                re += '.*';
            }
        } else if (c === '*') {
            re += starCrossesSlash ? '.*' : '[^/]*';
        } else if (c === '?') {
            re += '[^/]';
        } else if (c === '[') {
            const end = glob.indexOf(']', i + 1);
            if (end < 0) {
                re += '\\[';
            } else {
                let body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
                if (body.startsWith('!')) body = '^' + body.slice(1);
                re += '[' + body + ']';
                i = end;
            }
        } else {
            re += c.replace(/[.+^${}()|\\]/g, '\\$&');
        }
    }
    return new RegExp('^' + re + '$');
}

// A pattern without a slash matches a file or directory name anywhere (ruff's "single-path"
// patterns); one with a slash matches the path relative to the project root, where (as in ruff's
// globs) `*` also matches across a slash: "tests/*" covers tests/a/b.py.
function makeMatcher(patterns) {
    const compiled = patterns.map((p) => {
        const clean = p.replace(/^\.\//, '').replace(/\/+$/, '');
        return { anywhere: !clean.includes('/'), re: globToRegExp(clean, true) };
    });
    return (rel) => {
        const base = path.posix.basename(rel);
        return compiled.some((m) => m.re.test(m.anywhere ? base : rel));
    };
}

// ---- .gitignore ----

function readGitignore(absDir, relDir) {
    let text;
    try {
        text = fs.readFileSync(path.join(absDir, '.gitignore'), 'utf8');
    } catch {
        return [];
    }
    const rules = [];
    for (let line of text.split(/\r?\n/)) {
        if (line === '' || line.startsWith('#')) continue;
        line = line.replace(/(?<!\\)\s+$/, '');
        let negate = false;
        if (line.startsWith('!')) {
            negate = true;
            line = line.slice(1);
        }
        let dirOnly = false;
        if (line.endsWith('/')) {
            dirOnly = true;
            line = line.replace(/\/+$/, '');
        }
        if (line === '') continue;
        const anchored = line.includes('/');
        line = line.replace(/^\//, '');
        rules.push({ base: relDir, negate, dirOnly, anchored, re: globToRegExp(line) });
    }
    return rules;
}

function gitignored(rules, rel, isDir) {
    let ignored = false;
    for (const r of rules) {
        if (r.dirOnly && !isDir) continue;
        const sub = r.base === '' ? rel : rel.slice(r.base.length + 1);
        const target = r.anchored ? sub : path.posix.basename(sub);
        if (r.re.test(target)) ignored = !r.negate;
    }
    return ignored;
}

// ---- configuration ----

function readToml(file) {
    let text;
    try {
        text = fs.readFileSync(file, 'utf8');
    } catch (e) {
        throw new UsageError(`cannot read ${file}: ${e.message}`);
    }
    try {
        return parseToml(text);
    } catch (e) {
        throw new UsageError(`${file} is not valid TOML: ${e.message.split('\n')[0]}`);
    }
}

// project.requires-python of DIR's pyproject.toml, if any: ruff infers target-version from it
// for a ruff.toml in the same directory too, and when there is no configuration at all.
function requiresPythonIn(dir) {
    const py = path.join(dir, 'pyproject.toml');
    return fs.existsSync(py) ? readToml(py).project?.['requires-python'] : undefined;
}

function configIn(dir) {
    for (const name of ['.ruff.toml', 'ruff.toml']) {
        const file = path.join(dir, name);
        if (fs.existsSync(file)) return { file, options: readToml(file), requiresPython: requiresPythonIn(dir) };
    }
    const py = path.join(dir, 'pyproject.toml');
    if (fs.existsSync(py)) {
        const doc = readToml(py);
        if (doc.tool && typeof doc.tool.ruff === 'object') {
            return { file: py, options: doc.tool.ruff, requiresPython: doc.project?.['requires-python'] };
        }
    }
    return null;
}

function mergeOptions(base, child) {
    const out = { ...base };
    for (const [k, v] of Object.entries(child)) {
        const isTable = (x) => x && typeof x === 'object' && !Array.isArray(x);
        out[k] = isTable(v) && isTable(out[k]) ? mergeOptions(out[k], v) : v;
    }
    return out;
}

function resolveExtend(cfg, seen = new Set()) {
    const ext = cfg.options.extend;
    if (typeof ext !== 'string') return cfg.options;
    const file = path.resolve(path.dirname(cfg.file), ext.replace(/^~(?=\/)/, process.env.HOME || '~'));
    if (seen.has(file)) throw new UsageError(`${cfg.file}: "extend" loops back to ${file}`);
    seen.add(file);
    const doc = readToml(file);
    const options = path.basename(file) === 'pyproject.toml' ? doc.tool?.ruff || {} : doc;
    const base = resolveExtend({ file, options }, seen);
    return mergeOptions(base, cfg.options);
}

function findConfig(start) {
    for (let dir = start; ; dir = path.dirname(dir)) {
        const cfg = configIn(dir);
        if (cfg) return { ...cfg, root: dir, options: resolveExtend(cfg) };
        if (path.dirname(dir) === dir) {
            return { file: null, root: start, options: {}, requiresPython: requiresPythonIn(start) };
        }
    }
}

function targetFromRequires(spec) {
    const m = typeof spec === 'string' && spec.match(/(?:>=?|~=|==)\s*3\.(\d+)/);
    return m ? `py3${m[1]}` : undefined;
}

function asList(value, key) {
    if (value === undefined) return [];
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
        throw new UsageError(`"${key}" must be a list of strings`);
    }
    return value;
}

function perFileIgnores(options) {
    const lint = options.lint || {};
    const entries = [];
    for (const table of [options['per-file-ignores'], lint['per-file-ignores'],
        options['extend-per-file-ignores'], lint['extend-per-file-ignores']]) {
        if (table === undefined) continue;
        if (typeof table !== 'object' || Array.isArray(table)) {
            throw new UsageError('"per-file-ignores" must be a table of pattern = [codes]');
        }
        for (const [pattern, codes] of Object.entries(table)) {
            const negate = pattern.startsWith('!');
            const p = negate ? pattern.slice(1) : pattern;
            entries.push({ negate, match: makeMatcher([p]), codes: asList(codes, `per-file-ignores.${pattern}`) });
        }
    }
    return entries;
}

function loadSettings(cwd, isolated = false) {
    // --isolated (ruff's flag): no configuration file, ruff's defaults (the python-strict profile)
    const cfg = isolated ? { file: null, root: cwd, options: {}, requiresPython: undefined }
        : findConfig(cwd);
    const options = cfg.options;
    const workspaceOptions = {};
    for (const [k, v] of Object.entries(options)) {
        if (!FILE_KEYS.includes(k) && !k.endsWith('per-file-ignores')) workspaceOptions[k] = v;
    }
    workspaceOptions.lint = { ...(workspaceOptions.lint || {}) };
    for (const k of LINT_PATH_KEYS) delete workspaceOptions.lint[k];
    if (workspaceOptions.lint.select === undefined && workspaceOptions.select === undefined) {
        workspaceOptions.lint.select = DEFAULT_SELECT;
    }
    if (workspaceOptions.format) {
        workspaceOptions.format = { ...workspaceOptions.format };
        delete workspaceOptions.format.exclude;
    }
    if (workspaceOptions['target-version'] === undefined) {
        const t = targetFromRequires(cfg.requiresPython);
        if (t) workspaceOptions['target-version'] = t;
    }
    let workspace;
    try {
        workspace = new Workspace(workspaceOptions, PositionEncoding.Utf32);
    } catch (e) {
        const where = cfg.file ? path.relative(cwd, cfg.file) || cfg.file : 'the defaults';
        throw new UsageError(`invalid ruff configuration in ${where}: ${String(e).replace(/^(Error: )+/, '').replace(/ from the CLI$/, '')}`);
    }
    const exclude = options.exclude !== undefined ? asList(options.exclude, 'exclude') : DEFAULT_EXCLUDE;
    const include = options.include !== undefined ? asList(options.include, 'include') : DEFAULT_INCLUDE;
    return {
        file: cfg.file,
        root: cfg.root,
        workspace,
        formatConfigured: options.format !== undefined,
        include: makeMatcher([...include, ...asList(options['extend-include'], 'extend-include')]),
        exclude: makeMatcher([...exclude, ...asList(options['extend-exclude'], 'extend-exclude')]),
        lintExclude: makeMatcher(asList(options.lint?.exclude, 'lint.exclude')),
        formatExclude: makeMatcher(asList(options.format?.exclude, 'format.exclude')),
        respectGitignore: options['respect-gitignore'] !== false,
        perFile: perFileIgnores(options),
    };
}

// ---- files ----

function relToRoot(settings, abs) {
    return path.relative(settings.root, abs).split(path.sep).join('/');
}

function collectFiles(settings, abs, out, gitRules) {
    let st;
    try {
        st = fs.statSync(abs);
    } catch (e) {
        throw new UsageError(`${abs}: ${e.code === 'ENOENT' ? 'no such file or directory' : e.message}`);
    }
    if (!st.isDirectory()) {
        out.push(abs);
        return;
    }
    const relDir = relToRoot(settings, abs);
    const rules = settings.respectGitignore && !relDir.startsWith('..')
        ? [...gitRules, ...readGitignore(abs, relDir === '' ? '' : relDir)] : gitRules;
    for (const entry of fs.readdirSync(abs, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const child = path.join(abs, entry.name);
        const rel = relToRoot(settings, child);
        const isDir = entry.isDirectory();
        if (settings.exclude(rel)) continue;
        if (settings.respectGitignore && gitignored(rules, rel, isDir)) continue;
        if (isDir) collectFiles(settings, child, out, rules);
        else if (entry.isFile() && settings.include(rel)) out.push(child);
    }
}

// A path given on the command line is still checked against exclude and .gitignore when it is
// inside a directory ruff would skip (ruff's force-exclude is off by default: named files are
// checked, named directories are walked).
function gatherPaths(settings, cwd, args) {
    const files = [];
    const rootRules = settings.respectGitignore ? readGitignore(settings.root, '') : [];
    for (const arg of args.length ? args : ['.']) {
        const abs = path.resolve(cwd, arg);
        if (abs === settings.root) {
            collectFiles(settings, abs, files, []);
        } else {
            collectFiles(settings, abs, files, rootRules);
        }
    }
    return [...new Set(files)];
}

// ---- check ----

function selectorMatches(selector, code) {
    return selector === 'ALL' || code.startsWith(selector);
}

function ignoredByPath(settings, rel, code) {
    return settings.perFile.some((e) => e.match(rel) !== e.negate &&
        e.codes.some((s) => selectorMatches(s, code)));
}

function toJson(d, filename) {
    return {
        code: d.code === 'invalid-syntax' ? null : d.code,
        message: d.message,
        filename,
        location: d.start_location,
        end_location: d.end_location,
        fix: d.fix ? {
            message: d.fix.message,
            edits: d.fix.edits.map((e) => ({ content: e.content, location: e.location, end_location: e.end_location })),
        } : null,
        noqa_row: d.start_location.row,
    };
}

function runCheck(settings, cwd, files, format) {
    const findings = [];
    for (const abs of files) {
        const rel = relToRoot(settings, abs);
        if (settings.lintExclude(rel)) continue;
        const display = path.relative(cwd, abs) || path.basename(abs);
        const source = fs.readFileSync(abs, 'utf8');
        for (const d of settings.workspace.check(source)) {
            if (d.code && d.code !== 'invalid-syntax' && ignoredByPath(settings, rel, d.code)) continue;
            findings.push(toJson(d, display));
        }
    }
    findings.sort((a, b) => a.filename.localeCompare(b.filename) || a.location.row - b.location.row ||
        a.location.column - b.location.column);
    if (format === 'json') {
        process.stdout.write(JSON.stringify(findings, null, 2) + '\n');
    } else {
        for (const f of findings) {
            const code = f.code === null ? 'SyntaxError:' : f.code;
            process.stdout.write(`${f.filename}:${f.location.row}:${f.location.column}: ${code} ${f.message}\n`);
        }
        if (findings.length) {
            process.stdout.write(`Found ${findings.length} error${findings.length === 1 ? '' : 's'}.\n`);
        } else {
            process.stdout.write('All checks passed!\n');
        }
    }
    return findings.length ? 1 : 0;
}

function runFormatCheck(settings, cwd, files) {
    let changed = 0;
    let same = 0;
    let failed = 0;
    for (const abs of files) {
        if (settings.formatExclude(relToRoot(settings, abs)) || abs.endsWith('.ipynb')) continue;
        const display = path.relative(cwd, abs) || path.basename(abs);
        const source = fs.readFileSync(abs, 'utf8');
        let formatted;
        try {
            formatted = settings.workspace.format(source);
        } catch (e) {
            process.stderr.write(`error: Failed to parse ${display}: ${String(e).replace(/^(Error: )+/, '')}\n`);
            failed++;
            continue;
        }
        if (formatted !== source) {
            process.stdout.write(`Would reformat: ${display}\n`);
            changed++;
        } else {
            same++;
        }
    }
    const plural = (n) => `${n} file${n === 1 ? '' : 's'}`;
    const parts = [];
    if (changed) parts.push(`${plural(changed)} would be reformatted`);
    if (same || !changed) parts.push(`${plural(same)} already formatted`);
    process.stdout.write(parts.join(', ') + '\n');
    if (failed) return 2;
    return changed ? 1 : 0;
}

// ---- command line ----

const USAGE = `usage: clearing-ruff [check] [--isolated] [--output-format concise|json] [PATH...]
       clearing-ruff format --check [--if-configured] [--isolated] [PATH...]
       clearing-ruff --version`;

function parseArgs(argv) {
    const opts = { command: 'check', format: 'concise', check: false, ifConfigured: false, isolated: false, paths: [] };
    let i = 0;
    if (argv[0] === 'check' || argv[0] === 'format') opts.command = argv[i++];
    for (; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--') {
            opts.paths.push(...argv.slice(i + 1));
            break;
        } else if (a === '--output-format' || a.startsWith('--output-format=')) {
            const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
            if (v !== 'concise' && v !== 'json') {
                throw new UsageError(`--output-format must be concise or json, not ${v === undefined ? 'nothing' : `"${v}"`}`);
            }
            opts.format = v;
        } else if (a === '--check' && opts.command === 'format') {
            opts.check = true;
        } else if (a === '--if-configured' && opts.command === 'format') {
            opts.ifConfigured = true;
        } else if (a === '--isolated') {
            opts.isolated = true;
        } else if (a === '--version') {
            opts.command = 'version';
        } else if (a === '-h' || a === '--help') {
            opts.command = 'help';
        } else if (a.startsWith('-')) {
            throw new UsageError(`unknown option ${a}`);
        } else {
            opts.paths.push(a);
        }
    }
    if (opts.command === 'format' && !opts.check) {
        throw new UsageError('format only checks here: use clearing-ruff format --check');
    }
    if (opts.command === 'format' && opts.format === 'json') {
        throw new UsageError('--output-format is for check, not format');
    }
    return opts;
}

function main(argv) {
    const cwd = process.cwd();
    const opts = parseArgs(argv);
    if (opts.command === 'help') {
        process.stdout.write(USAGE + '\n');
        return 0;
    }
    if (opts.command === 'version') {
        process.stdout.write(`ruff ${Workspace.version()} (WebAssembly, clearing-ruff)\n`);
        return 0;
    }
    const settings = loadSettings(cwd, opts.isolated);
    const where = settings.file ? path.relative(cwd, settings.file) || settings.file : 'ruff defaults (no configuration found)';
    process.stderr.write(`clearing-ruff: ruff ${Workspace.version()}, configuration: ${where}\n`);
    if (opts.command === 'format' && opts.ifConfigured && !settings.formatConfigured) {
        process.stdout.write('the project does not configure ruff format ([format] / [tool.ruff.format]): skipped\n');
        return 0;
    }
    const files = gatherPaths(settings, cwd, opts.paths);
    if (opts.command === 'format') return runFormatCheck(settings, cwd, files);
    return runCheck(settings, cwd, files, opts.format);
}

try {
    process.exitCode = main(process.argv.slice(2));
} catch (e) {
    if (!(e instanceof UsageError)) {
        process.stderr.write(`clearing-ruff: internal error: ${e.stack || e}\n`);
        process.exitCode = 2;
    } else {
        process.stderr.write(`clearing-ruff: error: ${e.message}\n${e.message.startsWith('unknown option') || e.message.startsWith('--') || e.message.startsWith('format') ? USAGE + '\n' : ''}`);
        process.exitCode = 2;
    }
}
