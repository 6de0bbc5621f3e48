/* bitplan: decides how many bits each tensor of a language model gets. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef BP_VERSION
#define BP_VERSION "0.1.0"
#endif


static const struct {
    const char *name;
    bp_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"inspect", bp_cmd_inspect, "list a model's tensors, shapes, dtypes and sizes"},
    {"formats", bp_cmd_formats, "list the quantization formats and their bit costs"},
    {"plan", bp_cmd_plan, "measure errors and solve for the best plan under a budget"},
    {"apply", bp_cmd_apply, "quantize a model according to a plan"},
    {"eval", bp_cmd_eval, "measure NLL, perplexity and KL of a (quantized) model"},
    {"pareto", bp_cmd_pareto, "the size/error Pareto front of a table as JSON and PNG"},
    {"serve", bp_cmd_serve, "run the coordinator daemon (jobs, leases, journal)"},
    {"worker", bp_cmd_worker, "run tasks for a coordinator"},
    {"submit", bp_cmd_submit, "submit a job spec to a coordinator; prints its id"},
    {"status", bp_cmd_status, "show a job's state, progress and ETA"},
    {"result", bp_cmd_result, "print a finished job's result"},
    {"cancel", bp_cmd_cancel, "cancel a job"},
    {"jobs", bp_cmd_jobs, "list a coordinator's jobs"},
    {"keygen", bp_cmd_keygen, "make a CURVE key pair"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan <command> [options]\n"
            "\n"
            "bitplan decides how many bits each tensor of a language model gets so\n"
            "that it fits a budget with the least accuracy loss, writes that plan,\n"
            "and applies it with its own kernels.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run 'bitplan <command> --help' for a command's options.\n"
            "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return BP_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return BP_EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("bitplan %s\n", BP_VERSION);
        return BP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "bitplan: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return BP_EXIT_USAGE;
}
