#include <getopt.h>
#include <stdio.h>

#include "bitplan/format.h"
#include "cli.h"

static void formats_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan formats [--rows R --cols C]\n"
            "\n"
            "List the format menu: canonical names and bits per weight including\n"
            "scales. With --rows/--cols, show the exact bytes for that shape and\n"
            "whether the format can store it. Layouts: docs/formats.md.\n"
            "\n"
            "options:\n"
            "  --rows R      output channels (default 4096)\n"
            "  --cols C      input channels (default 4096)\n"
            "  -h, --help    show this help\n");
}

int bp_cmd_formats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rows", required_argument, NULL, 'r'},
        {"cols", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long rows = 4096, cols = 4096;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (bp_cli_parse_long("formats", "--rows", optarg, 1, 1L << 31, &rows))
                return BP_EXIT_USAGE;
            break;
        case 'c':
            if (bp_cli_parse_long("formats", "--cols", optarg, 1, 1L << 31, &cols))
                return BP_EXIT_USAGE;
            break;
        case 'h': formats_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error("formats", "unknown or incomplete option '%s'",
                                      argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error("formats", "unexpected argument '%s'", argv[optind]);
    bp_format menu[256];
    size_t n = bp_format_menu(menu, sizeof menu / sizeof menu[0]);
    printf("%-18s %10s %14s  (shape %ld x %ld)\n", "format", "bits/w", "bytes", rows, cols);
    for (size_t i = 0; i < n && i < sizeof menu / sizeof menu[0]; i++) {
        if (bp_format_supports(&menu[i], rows, cols))
            printf("%-18s %10.4f %14llu\n", menu[i].name, bp_format_bpw(&menu[i], rows, cols),
                   (unsigned long long)bp_format_bytes(&menu[i], rows, cols));
        else
            printf("%-18s %10s %14s\n", menu[i].name, "-", "unsupported");
    }
    return BP_EXIT_OK;
}
