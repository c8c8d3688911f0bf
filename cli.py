"""The ``rnncore`` command line: one root group, one thin function per subcommand."""

import json

import click

from rnncore._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, "--version", prog_name="rnncore", message="%(version)s",
                      help="Print the rnncore version and exit.")
def main():
    """Fast, verified recurrent neural networks on the CPU."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json):
    """Versions, BLAS libraries, Numba threads and whether the kernel cache is warm."""
    from rnncore._info import gather_info

    report = gather_info()
    click.echo(json.dumps(report, indent=2) if as_json else _format_info(report))


def _format_info(report):
    lines = ["Versions"]
    lines += [f"  {name:<9} {version or 'not installed'}" for name, version in report["versions"].items()]

    lines += ["", "BLAS and OpenMP libraries (threadpoolctl)"]
    if not report["blas"]:
        lines.append("  none found")
    for lib in report["blas"]:
        arch = f"  architecture {lib['architecture']}" if lib["architecture"] else ""
        owner = f"  (shipped with {lib['shipped_with']})" if lib["shipped_with"] else ""
        version = f" {lib['version']}" if lib["version"] else ""
        lines.append(f"  {lib['user_api']}: {lib['internal_api']}{version}  "
                     f"threads {lib['num_threads']}{arch}  prefix {lib['prefix']}{owner}")
        lines.append(f"      {lib['filepath']}")
    lines.append("  (the kernels' np.dot calls BLAS through scipy.linalg.cython_blas)")

    nb = report["numba"]
    lines += ["", "Numba"]
    if nb["error"]:
        lines.append(f"  threads: unavailable ({nb['error']})")
    else:
        lines.append(f"  threads {nb['num_threads']}, threading layer {nb['threading_layer']} "
                     f"(requested: {nb['threading_layer_requested']})")

    lines += ["", "Environment"]
    env = [f"  {name}={value}" for name, value in report["env"].items()]
    lines += env or ["  (none of the relevant variables set)"]

    cache = report["numba_cache"]
    lines.append("")
    if cache["state"] == "disabled":
        lines.append("numba cache: disabled (RNNCORE_NUMBA_CACHE=0)")
    else:
        lines.append(f"numba cache: {cache['state']} ({cache['warm']}/{cache['total']} kernels have a fresh "
                     "cached index for this CPU)")
        lines += [f"  cache dir {path}" for path in cache["cache_dirs"]]
        lines += [f"  {name}: {state['status']}" for name, state in cache["kernels"].items()
                  if state["status"] != "warm"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
