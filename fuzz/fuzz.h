/* What every harness defines for libFuzzer (declared here for -Werror=missing-prototypes). */
#ifndef CLR_FUZZ_H
#define CLR_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
