"""The monitor's processing core without Kafka: stream runtime, pipeline, engine, metrics.

``consumers/monitor.py`` wraps :class:`~streamcover.monitor.pipeline.Pipeline` in the aiokafka
service; everything here runs (and is tested) with no broker.
"""
