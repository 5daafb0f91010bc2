"""Run a Flink SQL script (from ``mlprep stream compile``) with PyFlink; prints wall seconds.

Runs in PyFlink's own environment (``.venv-flink``: apache-flink pins pandas 2.2 and pyarrow
16), so it imports nothing from mlprep:  ``.venv-flink/bin/python flink_job.py SCRIPT.sql``

It is also the ``main.py`` of the Managed Flink application (``mlprep deploy plan``): there,
without an argument, the script is the ``sql`` property of the ``mlprep`` property group in
the application properties, found beside this file, and the job is submitted, not waited for.
"""

import json
import os
import re
import sys
import time

APPLICATION_PROPERTIES = "/etc/flink/application_properties.json"  # where Managed Flink puts them


def statements(script: str) -> list[str]:
    """Split on ``;`` at line ends, keeping an EXECUTE STATEMENT SET ... END block whole."""
    text = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    out, buf, in_set = [], [], False
    for line in text.splitlines():
        buf.append(line)
        if re.match(r"\s*EXECUTE STATEMENT SET", line, re.I):
            in_set = True
        if (in_set and re.match(r"\s*END\s*;\s*$", line, re.I)) or (not in_set and line.rstrip().endswith(";")):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            buf, in_set = [], False
    return out


def managed_script() -> str:
    """The SQL file named in the application properties, beside this file."""
    with open(APPLICATION_PROPERTIES, encoding="utf-8") as f:
        groups = {g["PropertyGroupId"]: g["PropertyMap"] for g in json.load(f)}
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), groups["mlprep"]["sql"])


def main(path: str, wait: bool = True) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t0 = time.perf_counter()
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    result = None
    with open(path, encoding="utf-8") as f:
        script = f.read()
    for stmt in statements(script):
        m = re.match(r"SET\s+'([^']+)'\s*=\s*'([^']*)'$", stmt, re.I)
        if m:
            env.get_config().set(m.group(1), m.group(2))
        else:
            result = env.execute_sql(stmt)
    if result is not None and wait:
        result.wait()
    print(f"{time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:  # on Managed Flink: the service runs the job; main returns once it is submitted
        main(managed_script(), wait=False)
