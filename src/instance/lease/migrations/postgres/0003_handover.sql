-- `cryptobot lease takeover`: the leader that hands over names the host that asked; until the lease has
-- been expired for one more TTL, only that host may acquire it (anyone after that, so a host that asked
-- and then died does not leave the bot without a poller). NULL: anyone may acquire a free lease.
ALTER TABLE cryptobot_lease.lease ADD COLUMN handover_to text;
