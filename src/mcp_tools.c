/* The MCP tools' table: each tool's name, description, input and output JSON
 * Schemas and handler. Arguments are checked against the inputSchema before the
 * handler runs, so a handler sees only the fields and types its schema allows.
 */
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools.h"
#include "mcp_tools_int.h"

/* Schema pieces, as JSON text. */
#define SANDBOX_ID                                                                                 \
    "\"sandbox_id\": {\"type\": \"string\", \"description\": \"the sandbox's "                     \
    "id (sb- and 16 hex "                                                                          \
    "digits), from create_sandbox or list_sandboxes\"}"
#define SIZE_OR_NUM "\"type\": [\"integer\", \"string\"]"
#define LIMITS                                                                                     \
    "\"limits\": {\"type\": \"object\", \"additionalProperties\": false, "                         \
    "\"description\": "                                                                            \
    "\"resource limits; omitted ones take the daemon's defaults\", "                               \
    "\"properties\": {"                                                                            \
    "\"cpus\": {\"type\": [\"number\", \"string\"], \"description\": \"cores, "                    \
    "0.1..4\"},"                                                                                   \
    "\"memory\": {" SIZE_OR_NUM ", \"description\": \"bytes or e.g. \\\"1g\\\", \\\"512m\\\"\"},"  \
    "\"pids\": {\"type\": \"integer\", \"minimum\": 8, \"maximum\": 4096},"                        \
    "\"lifetime\": {" SIZE_OR_NUM ", \"description\": \"seconds or e.g. \\\"30m\\\"\"},"           \
    "\"tmp_size\": {" SIZE_OR_NUM "}, \"workspace_size\": {" SIZE_OR_NUM "},"                      \
    "\"workspace_inodes\": {\"type\": \"integer\"}, \"nofile\": {\"type\": "                       \
    "\"integer\"},"                                                                                \
    "\"file_size\": {" SIZE_OR_NUM "}}}"
#define CREATE_FIELDS                                                                              \
    "\"image\": {\"type\": \"string\", \"description\": \"an image the "                           \
    "operator allows; default "                                                                    \
    "the daemon's\"}, " LIMITS ", "                                                                \
    "\"env\": {\"type\": \"object\", \"additionalProperties\": {\"type\": "                        \
    "\"string\"}, "                                                                                \
    "\"description\": \"environment of every command\"},"                                          \
    "\"repo\": {\"type\": \"string\", \"description\": \"a git repository on "                     \
    "the daemon's host "                                                                           \
    "(under its repo_roots): /workspace gets its base commit's files and the "                     \
    "sandbox a branch\"},"                                                                         \
    "\"base\": {\"type\": \"string\", \"description\": \"with repo: the commit "                   \
    "to start from "                                                                               \
    "(default HEAD)\"},"                                                                           \
    "\"branch\": {\"type\": \"string\", \"description\": \"with repo: the "                        \
    "branch commit writes "                                                                        \
    "to (default clearing/<sandbox id>)\"},"                                                       \
    "\"egress\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, "                        \
    "\"description\": "                                                                            \
    "\"hosts the sandbox may connect to (HOST[:PORT], *.SUFFIX); default "                         \
    "none\"}"
#define COMMAND_FIELDS                                                                             \
    "\"command\": {\"type\": \"string\", \"description\": \"a shell command "                      \
    "line (sh -c), e.g. "                                                                          \
    "\\\"make test 2>&1 | tail\\\"; give this or argv\"},"                                         \
    "\"argv\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, "                          \
    "\"minItems\": 1, "                                                                            \
    "\"description\": \"the program and its arguments, no shell; give this or "                    \
    "command\"},"                                                                                  \
    "\"cwd\": {\"type\": \"string\", \"description\": \"absolute; default "                        \
    "/workspace\"},"                                                                               \
    "\"env\": {\"type\": \"object\", \"additionalProperties\": {\"type\": "                        \
    "\"string\"}},"                                                                                \
    "\"stdin\": {\"type\": \"string\", \"description\": \"text given on "                          \
    "standard input\"}"
#define TIMEOUT                                                                                    \
    "\"timeout\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 86400, "                    \
    "\"description\": "                                                                            \
    "\"seconds before the command is killed (status timed_out); default 600\"}"
#define EXEC_RESULT                                                                                \
    "{\"type\": \"object\", \"properties\": {"                                                     \
    "\"status\": {\"type\": \"string\", \"description\": \"exited, signaled, "                     \
    "timed_out, oom, "                                                                             \
    "start_failed, sandbox_failed\"},"                                                             \
    "\"exit_code\": {\"type\": [\"integer\", \"null\"]}, \"signal\": "                             \
    "{\"type\": [\"integer\", "                                                                    \
    "\"null\"]}, \"stdout\": {\"type\": \"string\"}, \"stderr\": {\"type\": "                      \
    "\"string\"},"                                                                                 \
    "\"stdout_truncated\": {\"type\": \"boolean\"}, \"stderr_truncated\": "                        \
    "{\"type\": "                                                                                  \
    "\"boolean\"}, \"stdout_bytes\": {\"type\": \"integer\"}, "                                    \
    "\"stderr_bytes\": {\"type\": "                                                                \
    "\"integer\"}, \"wall_us\": {\"type\": \"integer\"}, \"cpu_user_us\": "                        \
    "{\"type\": "                                                                                  \
    "\"integer\"}, \"cpu_system_us\": {\"type\": \"integer\"}, "                                   \
    "\"peak_memory_bytes\": {\"type\": "                                                           \
    "\"integer\"}, \"sandbox_id\": {\"type\": \"string\"}, \"process_id\": "                       \
    "{\"type\": "                                                                                  \
    "\"string\"}}, \"required\": [\"status\", \"exit_code\", \"stdout\", "                         \
    "\"stderr\"]}"
#define SNAPSHOT_ID                                                                                \
    "\"snapshot_id\": {\"type\": \"string\", \"description\": \"the snapshot's id (snap- "    \
    "and 16 hex digits), from snapshot_sandbox or list_snapshots\"}"
/* The API's Snapshot (docs/openapi.yaml). */
#define SNAPSHOT                                                                                   \
    "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\"}, "                     \
    "\"sandbox\": {\"type\": \"string\"}, \"parent\": {\"type\": [\"string\", \"null\"]}, "        \
    "\"size\": {\"type\": \"integer\", \"description\": \"bytes on disk\"}, "                      \
    "\"sha256\": {\"type\": \"string\"}, \"created_at\": {\"type\": \"integer\"}, "                \
    "\"expires_at\": {\"type\": \"integer\"}, \"tenant\": {\"type\": \"string\"}, "                \
    "\"keep\": {\"type\": \"boolean\", \"description\": \"outlives its sandbox until it "          \
    "expires\"}, \"held\": {\"type\": \"boolean\", \"description\": \"a restore holds it (until "  \
    "the sandbox runs again, or on after a restore that cost the sandbox): not removed with "      \
    "its sandbox, still expires\"}, \"restorable\": {\"type\": \"boolean\", "                     \
    "\"description\": \"false: the code session's kernel (or another docker exec) ran when it "  \
    "was taken, and this gVisor cannot restore it (fork_sandbox and restore_sandbox refuse "      \
    "it)\"}}, "                                                                                   \
    "\"required\": [\"id\", \"sandbox\", \"size\", \"expires_at\"]}"
#define OBJ(props, req)                                                                            \
    "{\"type\": \"object\", \"additionalProperties\": false, \"properties\": "                     \
    "{" props "}, "                                                                                \
    "\"required\": [" req "]}"

struct tool {
    const char *name, *title, *description, *input, *output;
    mcp_tool_fn fn;
    bool read_only;
};

static const struct tool tools[] = {
    {"create_sandbox", "Create a sandbox",
     "Creates a sandbox (gVisor, no network unless egress allows hosts) with "
     "/workspace, "
     "optionally holding a git repository's files on a branch of its own. "
     "Returns its id. It "
     "is destroyed when this session ends unless keep is true.",
     OBJ(CREATE_FIELDS ", \"keep\": {\"type\": \"boolean\", \"description\": "
                       "\"keep it after this "
                       "session ends (default false)\"}",
         ""),
     "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\"}, "
     "\"state\": "
     "{\"type\": \"string\"}, \"kept\": {\"type\": \"boolean\"}}, "
     "\"required\": [\"id\"]}",
     tool_create_sandbox, false},
    {"run_command", "Run a command in a fresh sandbox",
     "Runs one command in a new sandbox and destroys the sandbox afterwards: "
     "for a single "
     "step. Returns its exit status, output, wall time, CPU and peak memory; a "
     "non-zero exit "
     "is an error result.",
     OBJ(COMMAND_FIELDS ", " TIMEOUT ", " CREATE_FIELDS, ""), EXEC_RESULT, tool_run_command, false},
    {"exec", "Run a command in a sandbox",
     "Runs a command in an existing sandbox and waits for it (progress while "
     "it runs; "
     "cancelling the call kills it). Returns its exit status, output, wall "
     "time, CPU and peak "
     "memory; a non-zero exit, a timeout or running out of memory is an error "
     "result.",
     OBJ(SANDBOX_ID ", " COMMAND_FIELDS ", " TIMEOUT, "\"sandbox_id\""), EXEC_RESULT, tool_exec,
     false},
    {"write_file", "Write a file",
     "Writes a file in the sandbox's /workspace (created with its directories, "
     "replaced if it "
     "exists).",
     OBJ(SANDBOX_ID ", \"path\": {\"type\": \"string\", \"description\": \"relative to "
                    "/workspace, e.g. src/app.py\"}, \"content\": {\"type\": \"string\"}, "
                    "\"encoding\": {\"type\": \"string\", \"enum\": [\"utf-8\", "
                    "\"base64\"], "
                    "\"description\": \"of content; default utf-8\"}",
         "\"sandbox_id\", \"path\", \"content\""),
     NULL, tool_write_file, false},
    {"read_file", "Read a file",
     "Reads a file of the sandbox's /workspace, at most 1 MiB (1048576 bytes). UTF-8 text "
     "comes as text (encoding utf-8; a longer one is cut: truncated). Other bytes (NUL, not "
     "UTF-8) come base64-encoded (encoding base64), a PNG, JPEG, GIF or WebP image also as "
     "image content; a larger binary file is an error saying how to read it in parts with "
     "offset and length. With offset or length only those bytes are read (a byte range of "
     "the file: size is the whole file's, truncated says more follows); they come as text "
     "when UTF-8 without NUL, else base64-encoded.",
     OBJ(SANDBOX_ID ", \"path\": {\"type\": \"string\", \"description\": \"relative to "
                    "/workspace\"}, \"offset\": {\"type\": \"integer\", \"minimum\": 0, "
                    "\"description\": \"the first byte to read (default 0)\"}, "
                    "\"length\": {\"type\": \"integer\", \"minimum\": 1, "
                    "\"maximum\": 1048576, \"description\": \"how many bytes (default and "
                    "at most 1048576)\"}",
         "\"sandbox_id\", \"path\""),
     "{\"type\": \"object\", \"properties\": {\"path\": {\"type\": \"string\"}, "
     "\"content\": {\"type\": \"string\", \"description\": \"the text, or the bytes "
     "base64-encoded (at most 1048576 bytes)\"}, "
     "\"encoding\": {\"type\": \"string\", \"enum\": [\"utf-8\", \"base64\"]}, "
     "\"size\": {\"type\": \"integer\", \"description\": \"the file's size in bytes\"}, "
     "\"truncated\": {\"type\": \"boolean\", \"description\": \"text cut at 1 MiB, or "
     "bytes of the file after the range read\"}, "
     "\"offset\": {\"type\": \"integer\", \"description\": \"with a range: its first "
     "byte\"}, "
     "\"length\": {\"type\": \"integer\", \"description\": \"with a range: the bytes "
     "read\"}, "
     "\"mime_type\": {\"type\": \"string\", \"description\": \"an image's type, e.g. "
     "image/png\"}}, \"required\": [\"content\", \"encoding\", \"size\"]}",
     tool_read_file, true},
    {"list_files", "List a directory", "Lists a directory of the sandbox's /workspace.",
     OBJ(SANDBOX_ID ", \"path\": {\"type\": \"string\", \"description\": \"relative to "
                    "/workspace; default the workspace itself\"}",
         "\"sandbox_id\""),
     "{\"type\": \"object\", \"properties\": {\"path\": {\"type\": "
     "\"string\"}, \"entries\": "
     "{\"type\": \"array\"}}, \"required\": [\"entries\"]}",
     tool_list_files, true},
    {"delete_file", "Delete a file", "Deletes a file, a symlink or a directory of /workspace.",
     OBJ(SANDBOX_ID ", \"path\": {\"type\": \"string\"}, \"recursive\": "
                    "{\"type\": \"boolean\", "
                    "\"description\": \"needed for a non-empty directory\"}",
         "\"sandbox_id\", \"path\""),
     NULL, tool_delete_file, false},
    {"start_process", "Start a background process",
     "Starts a command in the background (a server, a watcher) and returns its "
     "process id at "
     "once; read its output with read_process_output, end it with "
     "stop_process.",
     OBJ(SANDBOX_ID ", " COMMAND_FIELDS, "\"sandbox_id\""), NULL, tool_start_process, false},
    {"read_process_output", "Read a background process's output",
     "Returns a background process's output from the given offsets (pass the "
     "next_offset "
     "values of the previous answer to read on), and its result once it "
     "exited.",
     OBJ(SANDBOX_ID ", \"process_id\": {\"type\": \"string\", \"description\": \"pr- and "
                    "16 hex "
                    "digits, from start_process\"}, \"stdout_offset\": {\"type\": "
                    "\"integer\", "
                    "\"minimum\": 0}, \"stderr_offset\": {\"type\": \"integer\", "
                    "\"minimum\": 0}, "
                    "\"wait\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 60, "
                    "\"description\": \"seconds to wait for new output (default 0)\"}",
         "\"sandbox_id\", \"process_id\""),
     NULL, tool_read_process_output, true},
    {"stop_process", "Stop a background process",
     "Signals a background process (default KILL, which ends its whole process "
     "tree).",
     OBJ(SANDBOX_ID ", \"process_id\": {\"type\": \"string\"}, \"signal\": {\"type\": "
                    "[\"string\", \"integer\"], \"description\": \"e.g. TERM, INT, KILL "
                    "or 15\"}",
         "\"sandbox_id\", \"process_id\""),
     NULL, tool_stop_process, false},
    {"diff", "Show the changes",
     "The unified diff of the sandbox's workspace against its base "
     "commit (sandboxes created with a repo).",
     OBJ(SANDBOX_ID, "\"sandbox_id\""),
     "{\"type\": \"object\", \"properties\": {\"diff\": {\"type\": "
     "\"string\"}}, \"required\": "
     "[\"diff\"]}",
     tool_diff, true},
    {"commit", "Commit the workspace",
     "Commits the workspace to the sandbox's branch in its repository.",
     OBJ(SANDBOX_ID ", \"message\": {\"type\": \"string\"}, \"author_name\": {\"type\": "
                    "\"string\"}, \"author_email\": {\"type\": \"string\"}, \"trailers\": "
                    "{\"type\": \"array\", \"items\": {\"type\": \"string\"}, "
                    "\"description\": "
                    "\"\\\"Key: value\\\" lines\"}",
         "\"sandbox_id\", \"message\""),
     "{\"type\": \"object\", \"properties\": {\"commit\": {\"type\": "
     "\"string\"}, \"branch\": "
     "{\"type\": \"string\"}, \"changed\": {\"type\": \"boolean\"}}}",
     tool_commit, false},
    {"run_gauntlet", "Run the validation gauntlet",
     "Runs the repository's validation gauntlet (.clearing/gauntlet.yaml, or a "
     "profile's) in a "
     "fresh sandbox and returns the verdict; fail is an error result.",
     OBJ("\"repo\": {\"type\": \"string\", \"description\": \"a repository "
         "under the daemon's "
         "repo_roots\"}, \"profile\": {\"type\": \"string\", \"enum\": "
         "[\"python\", \"c\", \"python-strict\"]}, "
         "\"base\": {\"type\": \"string\"}",
         "\"repo\""),
     "{\"type\": \"object\", \"properties\": {\"verdict\": {\"type\": "
     "\"string\"}}}",
     tool_run_gauntlet, false},
    {"run_plan", "Run a plan",
     "Runs an agent's plan on a repository: a new branch, the plan's steps, "
     "the gauntlet and a "
     "commit carrying the verdict, in a fresh sandbox.",
     OBJ("\"repo\": {\"type\": \"string\"}, \"plan\": {\"type\": [\"object\", "
         "\"string\"], "
         "\"description\": \"the plan, as an object or YAML text\"}, "
         "\"profile\": {\"type\": "
         "\"string\", \"enum\": [\"python\", \"c\", \"python-strict\"]}, \"base\": {\"type\": "
         "\"string\"}",
         "\"repo\", \"plan\""),
     "{\"type\": \"object\", \"properties\": {\"verdict\": {\"type\": "
     "\"string\"}}}",
     tool_run_plan, false},
    {"destroy_sandbox", "Destroy a sandbox", "Destroys a sandbox and everything in it.",
     OBJ(SANDBOX_ID, "\"sandbox_id\""), NULL, tool_destroy_sandbox, false},
    {"list_sandboxes", "List sandboxes",
     "Lists the running sandboxes this session created (all: every running "
     "sandbox the "
     "daemon shows this caller).",
     OBJ("\"all\": {\"type\": \"boolean\"}", ""),
     "{\"type\": \"object\", \"properties\": {\"sandboxes\": {\"type\": "
     "\"array\"}}, "
     "\"required\": [\"sandboxes\"]}",
     tool_list_sandboxes, true},
    {"run_code", "Run Python in a sandbox's code session",
     "Runs a cell of Python in the sandbox's code session: a Jupyter kernel whose variables, "
     "imports and open files live from one call to the next (the sandbox's image needs "
     "python3-ipykernel, e.g. clearing/datascience with numpy, pandas and matplotlib). Returns "
     "its stdout, stderr, the value of its last expression (text/plain, text/html), its "
     "displays (a matplotlib figure as an image) and an error with its traceback. A cell past "
     "its timeout is interrupted (the state lives on; a second timeout in a row restarts the "
     "kernel); an error, a timeout, running out of memory (oom), a kernel that died or a "
     "sandbox destroyed while the cell ran (sandbox_failed, the text says by what) is an error "
     "result.",
     OBJ(SANDBOX_ID ", \"code\": {\"type\": \"string\", \"description\": \"Python source, "
                    "e.g. \\\"import pandas as pd\\\\ndf = pd.read_csv('data.csv')\\\\ndf.describe()\\\"\"}, "
                    "\"timeout\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 3600, "
                    "\"description\": \"seconds before the cell is interrupted; default 30\"}",
         "\"sandbox_id\", \"code\""),
     "{\"type\": \"object\", \"properties\": {\"status\": {\"type\": \"string\", "
     "\"description\": \"ok, error, timeout, oom, died, sandbox_failed\"}, \"execution_count\": {\"type\": "
     "[\"integer\", \"null\"]}, \"stdout\": {\"type\": \"string\"}, \"stderr\": {\"type\": "
     "\"string\"}, \"result\": {\"type\": [\"object\", \"null\"]}, \"displays\": {\"type\": "
     "\"array\"}, \"error\": {\"type\": [\"object\", \"null\"]}, \"truncated\": {\"type\": "
     "\"boolean\"}, \"restarted\": {\"type\": \"boolean\"}}, \"required\": [\"status\", "
     "\"stdout\", \"stderr\"]}",
     tool_run_code, false},
    {"restart_code", "Restart a sandbox's code session",
     "Gives the sandbox's code session a fresh Jupyter kernel, after the cells before it: the "
     "old kernel's variables, imports and open files are gone; files under /workspace stay. "
     "For a kernel in a bad state, or to run from a clean start. Takes as long as a kernel's "
     "start (seconds).",
     OBJ(SANDBOX_ID, "\"sandbox_id\""),
     "{\"type\": \"object\", \"properties\": {\"sandbox_id\": {\"type\": \"string\"}, "
     "\"status\": {\"type\": \"string\", \"enum\": [\"restarted\"]}}, \"required\": "
     "[\"sandbox_id\", \"status\"]}",
     tool_restart_code, false},
    {"end_code", "End a sandbox's code session",
     "Ends the sandbox's code session, after the cells before it: its kernel and variables are "
     "gone, files under /workspace stay, and the session's place among its tenant's code "
     "sessions is given back. The next run_code starts a fresh kernel. A sandbox without a "
     "code session is not an error.",
     OBJ(SANDBOX_ID, "\"sandbox_id\""),
     "{\"type\": \"object\", \"properties\": {\"sandbox_id\": {\"type\": \"string\"}, "
     "\"ended\": {\"type\": \"boolean\"}}, \"required\": [\"sandbox_id\", \"ended\"]}",
     tool_end_code, false},
    {"snapshot_sandbox", "Snapshot a sandbox",
     "Takes a snapshot of a running sandbox: its processes, memory, /tmp and /workspace. The "
     "sandbox runs on. Fork it with fork_sandbox (a new sandbox in that state) or take the "
     "sandbox back to it with restore_sandbox: for trying something and going back. Snapshots "
     "expire (ttl, default a day) and go with their sandbox unless keep is true. Not every "
     "daemon can take them (an error then says what its operator must enable).",
     OBJ(SANDBOX_ID ", \"keep\": {\"type\": \"boolean\", \"description\": \"keep it after "
                    "its sandbox is destroyed, until its ttl (default false)\"}, "
                    "\"ttl\": {\"type\": \"integer\", \"minimum\": 60, \"maximum\": 2592000, "
                    "\"description\": \"seconds until it is removed (default 86400)\"}",
         "\"sandbox_id\""),
     SNAPSHOT, tool_snapshot_sandbox, false},
    {"list_snapshots", "List a sandbox's snapshots",
     "Lists the snapshots of a sandbox, oldest first, with their ids, sizes and expiry, and "
     "whether each is kept or held by a restore.",
     OBJ(SANDBOX_ID, "\"sandbox_id\""),
     "{\"type\": \"object\", \"properties\": {\"snapshots\": {\"type\": \"array\", "
     "\"items\": " SNAPSHOT "}}, \"required\": [\"snapshots\"]}",
     tool_list_snapshots, true},
    {"fork_sandbox", "Fork a snapshot into a new sandbox",
     "Creates a new sandbox (its own id and workspace) in a snapshot's state: its processes, "
     "memory, /tmp and /workspace as they were when the snapshot was taken. It has the "
     "snapshot's sandbox's image, limits and egress; limits may only be lowered. It is "
     "destroyed when this session ends unless keep is true.",
     OBJ(SNAPSHOT_ID ", " LIMITS ", \"keep\": {\"type\": \"boolean\", \"description\": "
                     "\"keep it after this session ends (default false)\"}",
         "\"snapshot_id\""),
     "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\"}, "
     "\"state\": {\"type\": \"string\"}, \"snapshot\": {\"type\": \"string\"}, "
     "\"kept\": {\"type\": \"boolean\"}}, \"required\": [\"id\"]}",
     tool_fork_sandbox, false},
    {"restore_sandbox", "Restore a sandbox to a snapshot",
     "Takes a sandbox back to one of its snapshots in place (the same id): its processes, "
     "memory, /tmp and /workspace become what they were; everything since is undone.",
     OBJ(SANDBOX_ID ", " SNAPSHOT_ID, "\"sandbox_id\", \"snapshot_id\""), NULL,
     tool_restore_sandbox, false},
    {"delete_snapshot", "Delete a snapshot", "Deletes one of a sandbox's snapshots.",
     OBJ(SANDBOX_ID ", " SNAPSHOT_ID, "\"sandbox_id\", \"snapshot_id\""), NULL,
     tool_delete_snapshot, false},
};

#define NTOOLS (sizeof(tools) / sizeof(tools[0]))

static const struct tool *find(const char *name)
{
    for (size_t i = 0; i < NTOOLS; i++) {
        if (strcmp(tools[i].name, name) == 0)
            return &tools[i];
    }
    return NULL;
}

bool mcp_tools_exists(const char *name)
{
    return name && find(name);
}

json_t *mcp_tools_list(void)
{
    json_t *list = json_array();
    for (size_t i = 0; i < NTOOLS; i++) {
        json_t *in = json_loads(tools[i].input, 0, NULL);
        json_t *t = json_pack("{s:s, s:s, s:s, s:o, s:{s:b}}", "name", tools[i].name, "title",
                              tools[i].title, "description", tools[i].description, "inputSchema",
                              in, "annotations", "readOnlyHint", tools[i].read_only);
        if (t && tools[i].output)
            json_object_set_new(t, "outputSchema", json_loads(tools[i].output, 0, NULL));
        json_array_append_new(list, t);
    }
    return list;
}

json_t *mcp_tools_call(struct mcp_call *c, const char *name, json_t *args)
{
    const struct tool *t = find(name);
    if (!t)
        return tool_error("unknown tool '%s'", name);
    _cleanup_json_ json_t *schema = json_loads(t->input, 0, NULL);
    char why[768];
    if (tool_check_args(schema, args, why, sizeof(why)) < 0)
        return tool_error("%s: %s. See the tool's inputSchema (tools/list) and call again.", name,
                          why);
    return t->fn(c, args);
}
