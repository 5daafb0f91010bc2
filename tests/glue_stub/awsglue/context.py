from pyspark.sql import SparkSession


class GlueContext:
    def __init__(self, sc):
        self.spark_session = SparkSession(sc)
