import json
import os


class Job:
    def __init__(self, glue_context):
        self.glue_context, self.name, self.state = glue_context, None, "new"

    def init(self, name, args):
        self.name, self.state = name, "running"

    def commit(self):
        self.state = "committed"
        marker = os.environ.get("GLUE_STUB_COMMIT_FILE")
        if marker:
            with open(marker, "w") as f:
                json.dump({"job": self.name, "state": self.state}, f)
