/* libclearing: runs untrusted commands in hardened gVisor sandboxes. */
#ifndef CLEARING_CLEARING_H
#define CLEARING_CLEARING_H

#include "agent.h"
#include "common.h"
#include "egress.h"
#include "engine.h"
#include "exec.h"
#include "files.h"
#include "gitws.h"
#include "limits.h"
#include "log.h"
#include "sandbox.h"
#include "spawn.h"

#endif
