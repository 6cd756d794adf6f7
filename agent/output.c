/* A command's output streams as the result counts them: see output.h. */
#include "output.h"

size_t agent_stream_take(struct stream *st, size_t n)
{
    st->total += (uint64_t)n;
    if (st->sent >= st->cap)
        return 0;
    uint64_t room = st->cap - st->sent;
    size_t send = (uint64_t)n < room ? n : (size_t)room;
    st->sent += send;
    return send;
}

bool agent_stream_truncated(const struct stream *st)
{
    return st->total > st->sent;
}
