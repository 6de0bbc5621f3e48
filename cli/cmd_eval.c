#include <stdio.h>

#include "cli.h"

/* Placeholder until the calibration engine's evaluation is wired in. */
int bp_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "bitplan eval: not available in this build yet\n");
    return BP_EXIT_FAIL;
}
