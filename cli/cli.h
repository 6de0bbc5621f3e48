/* bitplan command-line: shared helpers for the subcommands. */
#ifndef BITPLAN_CLI_H
#define BITPLAN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "bitplan/error.h"

/* Exit codes: 0 success, 1 runtime failure (bad input file, infeasible
 * budget, solver failure), 2 usage error (bad or missing arguments). */
#define BP_EXIT_OK 0
#define BP_EXIT_FAIL 1
#define BP_EXIT_USAGE 2

typedef int (*bp_cmd_fn)(int argc, char **argv);

int bp_cmd_inspect(int argc, char **argv);
int bp_cmd_formats(int argc, char **argv);
int bp_cmd_plan(int argc, char **argv);
int bp_cmd_pareto(int argc, char **argv);
int bp_cmd_apply(int argc, char **argv);
int bp_cmd_eval(int argc, char **argv);
/* distributed runtime (cmd_serve.c, cmd_worker.c, cmd_client.c, cmd_keygen.c) */
int bp_cmd_serve(int argc, char **argv);
int bp_cmd_worker(int argc, char **argv);
int bp_cmd_submit(int argc, char **argv);
int bp_cmd_status(int argc, char **argv);
int bp_cmd_result(int argc, char **argv);
int bp_cmd_cancel(int argc, char **argv);
int bp_cmd_jobs(int argc, char **argv);
int bp_cmd_keygen(int argc, char **argv);

/* Print "bitplan <cmd>: <message>" to stderr for an error record and
 * return BP_EXIT_FAIL. */
int bp_cli_fail(const char *cmd, const bp_error *err);
/* Print a usage error and a hint to run --help; returns BP_EXIT_USAGE. */
int bp_cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Strict number parsing for option values: the whole string must parse,
 * finite, within [lo, hi]. */
int bp_cli_parse_double(const char *cmd, const char *opt, const char *s,
                        double lo, double hi, double *out);
int bp_cli_parse_long(const char *cmd, const char *opt, const char *s,
                      long lo, long hi, long *out);

#endif

/* Calibration options shared by plan, apply and eval. Codes start at
 * BP_CLI_CALIB_BASE so they never collide with a command's own. */
#include "bitplan/calib_input.h"
enum {
    BP_CLI_CALIB_BASE = 1000,
    BP_CLI_O_TEXT = BP_CLI_CALIB_BASE, BP_CLI_O_TOKENS, BP_CLI_O_STATS, BP_CLI_O_CTX,
    BP_CLI_O_SEQS, BP_CLI_O_KLW, BP_CLI_O_DIAG
};
#define BP_CLI_CALIB_LONGOPTS(prefix)                                      \
    {prefix "text", required_argument, NULL, BP_CLI_O_TEXT},               \
    {prefix "tokens", required_argument, NULL, BP_CLI_O_TOKENS},           \
    {"stats", required_argument, NULL, BP_CLI_O_STATS},                    \
    {prefix "ctx", required_argument, NULL, BP_CLI_O_CTX},                 \
    {"calib-seqs", required_argument, NULL, BP_CLI_O_SEQS}
/* Handle option c if it is a calibration option: 1 handled, 0 not one,
 * -1 usage error (already printed). */
int bp_cli_calib_option(const char *cmd, int c, const char *arg, bp_calib_spec *spec);
