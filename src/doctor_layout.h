/* clearing doctor's checks of an installed daemon's layout (doctor_layout.c): its configuration
 * file, state directory, socket, audit log and systemd unit. cmd_doctor.c calls it and prints
 * through report; it calls nothing of cmd_doctor.c. */
#ifndef CLR_DOCTOR_LAYOUT_H
#define CLR_DOCTOR_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>

/* Where an installed daemon's configuration lives (the package's unit passes it). */
#define DOCTOR_DEFAULT_CONFIG "/etc/clearing/config.json"

/* One check's outcome: "ok" or "FAIL" with what is wrong and what to do. */
typedef void (*doctor_report_fn)(bool ok, const char *what, const char *detail);

struct doctor_layout_options {
    /* NULL: DOCTOR_DEFAULT_CONFIG, skipped when it does not exist or when this is the build
     * tree's clearing (the file belongs to the installed one). */
    const char *config;
    const char *daemon_user; /* whose access to the state directory counts; NULL: root */
    /* Out: the configuration's socket (empty when unknown), for the daemon's health check. */
    char socket[4096];
};

/* Runs the layout checks, each through report; a check that does not apply on this host
 * (no configuration at the usual place, systemd not PID 1) prints "skip" and why. */
void doctor_layout(struct doctor_layout_options *o, doctor_report_fn report);

#endif
