"""Operations: health probes, structured request logs, and the commands the start scripts run."""
