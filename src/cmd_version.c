/* clearing version (and clearing --version): what this clearing is and what it runs on: its
 * version and commit, the agent it would mount, the runsc the engine has registered and the
 * engine itself. Every question has a short timeout, and an unanswered one is said as such
 * ("not found", "not reachable"): a version never hangs and never fails. */
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "cli.h"
#include "clr-commit.h"

/* The engine's calls: short, so that a hung dockerd costs seconds, not the default 30 s. */
#define VERSION_ENGINE_TIMEOUT_MS 3000

/* The agent this binary would mount: {path, source} or {path: null, error}. */
static json_t *agent_json(void)
{
    char path[4096];
    clr_agent_source src;
    clr_error err = CLR_ERROR_INIT;
    if (clr_agent_locate(path, sizeof(path), NULL, &src, &err) < 0)
        return json_pack("{s:n, s:n, s:s}", "path", "source", "error", err.message);
    return json_pack("{s:s, s:s}", "path", path, "source", clr_agent_source_name(src));
}

/* runsc as registered with the engine: {version, path} or {version: "not found", error}. */
static json_t *runsc_json(clr_engine *eng, const char *engine_error)
{
    char path[4096], line[128];
    clr_error err = CLR_ERROR_INIT;
    if (!eng)
        return json_pack("{s:s, s:n, s:s}", "version", "not found", "path", "error",
                         engine_error);
    if (clr_engine_runtime_path(eng, "runsc", path, sizeof(path), &err) < 0)
        return json_pack("{s:s, s:n, s:s}", "version", "not found", "path", "error",
                         err.message);
    if (clr_runtime_version(eng, "runsc", line, sizeof(line), &err) < 0)
        return json_pack("{s:s, s:s, s:s}", "version", "not found", "path", path, "error",
                         err.message);
    return json_pack("{s:s, s:s}", "version", line, "path", path);
}

/* The engine: {name, version, api_version, socket} or {version: "not reachable", error}. */
static json_t *engine_json(clr_engine *eng, const char *engine_error)
{
    char version[128], api[32];
    clr_error err = CLR_ERROR_INIT;
    if (!eng)
        return json_pack("{s:s, s:s, s:n, s:s}", "name", "docker", "version", "not reachable",
                         "api_version", "error", engine_error);
    if (clr_engine_version(eng, version, sizeof(version), api, sizeof(api), &err) < 0)
        return json_pack("{s:s, s:s, s:n, s:s, s:s}", "name", "docker", "version",
                         "not reachable", "api_version", "socket", clr_engine_socket_path(eng),
                         "error", err.message);
    return json_pack("{s:s, s:s, s:s, s:s}", "name", "docker", "version", version,
                     "api_version", api, "socket", clr_engine_socket_path(eng));
}

static const char *field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void print_text(json_t *v)
{
    json_t *agent = json_object_get(v, "agent"), *runsc = json_object_get(v, "runsc"),
           *engine = json_object_get(v, "engine");
    printf("clearing %s\n", field(v, "version"));
    printf("commit:  %s\n", field(v, "commit"));
    if (json_is_string(json_object_get(agent, "path")))
        printf("agent:   %s (%s)\n", field(agent, "path"), field(agent, "source"));
    else
        printf("agent:   not found (%s)\n", field(agent, "error"));
    if (json_is_string(json_object_get(runsc, "path")) && !json_object_get(runsc, "error"))
        printf("runsc:   %s (%s)\n", field(runsc, "version"), field(runsc, "path"));
    else
        printf("runsc:   %s (%s)\n", field(runsc, "version"), field(runsc, "error"));
    if (json_is_string(json_object_get(engine, "api_version")))
        printf("engine:  %s %s, API %s (%s)\n", field(engine, "name"), field(engine, "version"),
               field(engine, "api_version"), field(engine, "socket"));
    else
        printf("engine:  %s %s (%s)\n", field(engine, "name"), field(engine, "version"),
               field(engine, "error"));
}

int cmd_version(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool as_json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'j') {
            as_json = true;
            continue;
        }
        if (c == 'h') {
            printf("Usage: clearing version [--json]   (also: clearing --version [--json])\n\n"
                   "Prints the version, the git commit it was built from (\"unknown\" outside "
                   "git),\nthe agent it would use and from where, the runsc registered with "
                   "the engine\n(its --version, or \"not found\") and the engine (version and "
                   "API version, or\n\"not reachable\"; %d s at most).\n",
                   VERSION_ENGINE_TIMEOUT_MS / 1000);
            return 0;
        }
        cli_usage_error("version", "unknown option");
        return CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        cli_usage_error("version", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = cli_global.docker_host;
    o.request_timeout_ms = VERSION_ENGINE_TIMEOUT_MS;
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_engine_open(&eng, &o, &err) < 0)
        eng = NULL;
    _cleanup_json_ json_t *v = json_pack("{s:s, s:s, s:o, s:o, s:o}", "version", clr_version(),
                                         "commit", CLR_GIT_COMMIT, "agent", agent_json(),
                                         "runsc", runsc_json(eng, err.message), "engine",
                                         engine_json(eng, err.message));
    clr_engine_free(eng);
    if (!v) {
        fprintf(stderr, "clearing: out of memory\n");
        return CLI_EXIT_CLEARING;
    }
    if (as_json)
        cli_print_json(v);
    else
        print_text(v);
    return 0;
}
