cat /etc/motd.rcompose
echo "$GREETING (cwd $(pwd))"
