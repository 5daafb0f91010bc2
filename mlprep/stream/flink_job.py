"""Run a Flink SQL script (from ``mlprep stream compile``) with PyFlink; prints wall seconds.

Runs in PyFlink's own environment (``.venv-flink``: apache-flink pins pandas 2.2 and pyarrow
16), so it imports nothing from mlprep:  ``.venv-flink/bin/python flink_job.py SCRIPT.sql``
"""

import re
import sys
import time


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


def main(path: str) -> None:
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
    if result is not None:
        result.wait()
    print(f"{time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
