#include <getopt.h>

#include "cli.h"

int bp_cli_calib_option(const char *cmd, int c, const char *arg, bp_calib_spec *spec)
{
    long v;
    switch (c) {
    case BP_CLI_O_TEXT: spec->text_path = arg; return 1;
    case BP_CLI_O_TOKENS: spec->tokens_path = arg; return 1;
    case BP_CLI_O_STATS: spec->stats_path = arg; return 1;
    case BP_CLI_O_DIAG: spec->diag_only = 1; return 1;
    case BP_CLI_O_CTX:
    case BP_CLI_O_SEQS:
    case BP_CLI_O_KLW: {
        const char *name = c == BP_CLI_O_CTX ? "--ctx" : c == BP_CLI_O_SEQS ? "--calib-seqs" : "--kl-windows";
        if (bp_cli_parse_long(cmd, name, arg, 1, 1L << 30, &v))
            return -1;
        if (c == BP_CLI_O_CTX)
            spec->ctx = v;
        else if (c == BP_CLI_O_SEQS)
            spec->n_seq = v;
        else
            spec->kl_windows = v;
        return 1;
    }
    }
    return 0;
}
