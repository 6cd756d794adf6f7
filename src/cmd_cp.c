/* clearing cp: files in and out of a daemon's sandbox.
 *   clearing cp LOCAL_FILE ID:PATH        upload a file
 *   clearing cp LOCAL_DIR  ID:DIR         upload a directory (as a tar archive)
 *   clearing cp ID:PATH LOCAL_FILE|-      download a file
 *   clearing cp ID:DIR  ARCHIVE.tar|-     download a directory as a tar archive
 * Nothing from the sandbox is ever unpacked on the host: a directory comes out as an archive. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "clearing/files.h"

static bool split_remote(const char *arg, char *id, size_t idlen, const char **path)
{
    const char *colon = strchr(arg, ':');
    if (!colon || (size_t)(colon - arg) >= idlen)
        return false;
    memcpy(id, arg, (size_t)(colon - arg));
    id[colon - arg] = '\0';
    *path = colon + 1;
    return clr_sandbox_id_valid(id);
}

struct sink {
    CURL *curl;
    int fd;        /* where a 2xx answer's bytes go; -1 to drop them */
    char *err;     /* where an error answer's body goes */
    size_t errlen, errcap;
};

/* Bytes of a successful answer go to the file; an error answer is kept to be reported. */
static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300 || s->fd < 0) {
        size_t room = s->errcap - 1 - s->errlen;
        size_t k = len < room ? len : room;
        memcpy(s->err + s->errlen, p, k);
        s->errlen += k;
        s->err[s->errlen] = '\0';
        return len;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(s->fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        off += (size_t)w;
    }
    return len;
}

/* A raw transfer: PUT from in_fd, or GET into out_fd. Returns the HTTP status or -1. */
static int transfer(const char *method, const char *path, int in_fd, off_t in_len, int out_fd,
                    char *errbody, size_t errlen, clr_error *err)
{
    char url[8300];
    CURL *c = curl_easy_init();
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    snprintf(url, sizeof(url), "http://clearing%s", path);
    FILE *in = in_fd >= 0 ? fdopen(dup(in_fd), "rb") : NULL;
    errbody[0] = '\0';
    struct sink sink = {.curl = c, .fd = out_fd, .err = errbody, .errcap = errlen};
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, client_socket());
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (in) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READDATA, in);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)in_len);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (in)
        fclose(in);
    if (rc != CURLE_OK)
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "talking to the daemon at %s: %s",
                             client_socket(), curl_easy_strerror(rc));
    return (int)status;
}

static void report_error(int status, const char *body, clr_error *err)
{
    json_t *j = json_loads(body, 0, NULL);
    client_status_error(status, j, err);
    json_decref(j);
}

static char *escape_path(const char *p)
{
    /* Each byte that is not unreserved or '/' is percent-encoded. */
    char *o = malloc(strlen(p) * 3 + 1), *q = o;
    if (!o)
        return NULL;
    for (; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '/' || ch == '~')
            *q++ = (char)ch;
        else
            q += sprintf(q, "%%%02X", ch);
    }
    *q = '\0';
    return o;
}

/* A directory as a tar archive in an unnamed temporary file: the file (its offset at 0, *len
 * its size; the caller closes it), or -1 after saying why. */
static int tar_of(const char *local, off_t *len)
{
    clr_error err = CLR_ERROR_INIT;
    _cleanup_close_ int root = -1;
    _cleanup_close_ int fd = open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 || clr_files_open_root(&root, local, &err) < 0 ||
        clr_files_create_tar(root, "", fd, NULL, NULL, &err) < 0) {
        cli_error(&err);
        return -1;
    }
    *len = lseek(fd, 0, SEEK_END);
    lseek(fd, 0, SEEK_SET);
    return steal_fd(&fd);
}

/* cp LOCAL ID:PATH: a file, or a directory as an archive. Returns the exit status. */
static int cp_upload(const char *id, const char *esc, const char *local)
{
    clr_error err = CLR_ERROR_INIT;
    char body[4096];
    char path[8192];
    struct stat st;
    if (stat(local, &st) < 0) {
        fprintf(stderr, "clearing: %s: %s\n", local, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    _cleanup_close_ int fd = -1;
    off_t len = 0;
    if (S_ISDIR(st.st_mode)) {
        fd = tar_of(local, &len);
        if (fd < 0)
            return CLI_EXIT_FAILURE;
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/archive?path=%s", id, esc);
    } else {
        fd = open(local, O_RDONLY | O_CLOEXEC);
        len = st.st_size;
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/%s", id, esc);
    }
    if (fd < 0) {
        fprintf(stderr, "clearing: %s: %s\n", local, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    int status = transfer("PUT", path, fd, len, -1, body, sizeof(body), &err);
    if (status != 201) {
        if (status > 0)
            report_error(status, body, &err);
        cli_error(&err);
        return cli_failure_status(&err);
    }
    return 0;
}

/* cp ID:PATH LOCAL: a file, or a directory as an archive (LOCAL ends in .tar, or is - for
 * stdout); a LOCAL that exists is never overwritten. Returns the exit status. */
static int cp_download(const char *id, const char *esc, const char *local)
{
    clr_error err = CLR_ERROR_INIT;
    char body[4096];
    char path[8192];
    bool to_stdout = strcmp(local, "-") == 0;
    size_t ll = strlen(local);
    bool as_tar = ll > 4 && strcmp(local + ll - 4, ".tar") == 0;
    _cleanup_close_ int own =
        to_stdout ? -1 : open(local, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (!to_stdout && own < 0) {
        fprintf(stderr, "clearing: %s: %s (cp does not overwrite)\n", local, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    if (as_tar)
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/archive?path=%s", id, esc);
    else
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/files/%s", id, esc);
    int status = transfer("GET", path, -1, 0, to_stdout ? STDOUT_FILENO : own, body,
                          sizeof(body), &err);
    if (status != 200) {
        if (!to_stdout)
            unlink(local);
        if (status > 0)
            report_error(status, body, &err);
        cli_error(&err);
        return cli_failure_status(&err);
    }
    return 0;
}

int cmd_cp(int argc, char **argv)
{
    if (argc != 3) {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: clearing cp LOCAL ID:PATH     upload a file or a directory\n"
                   "       clearing cp ID:PATH LOCAL     download a file, or a directory as a\n"
                   "                                     tar archive (LOCAL ends in .tar, or -)\n");
            return 0;
        }
        cli_usage_error("cp", "usage: clearing cp SRC DST (one of them ID:PATH)");
        return CLI_EXIT_USAGE;
    }
    char id[CLR_SANDBOX_ID_MAX + 1];
    const char *rpath = NULL;
    clr_error err = CLR_ERROR_INIT;
    bool upload = split_remote(argv[2], id, sizeof(id), &rpath);
    if (!upload && !split_remote(argv[1], id, sizeof(id), &rpath)) {
        cli_usage_error("cp", "one side must be ID:PATH with a sandbox id");
        return CLI_EXIT_USAGE;
    }
    if (clr_files_check_path(rpath, &err) < 0) {
        cli_usage_error("cp", "%s", err.message);
        return CLI_EXIT_USAGE;
    }
    _cleanup_free_ char *esc = escape_path(rpath);
    if (!esc)
        return CLI_EXIT_FAILURE;
    return upload ? cp_upload(id, esc, argv[1]) : cp_download(id, esc, argv[2]);
}
