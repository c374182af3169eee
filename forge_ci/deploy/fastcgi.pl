# forge-ci's FastCGI client for PHP-FPM, run on the host with this program on stdin:
#
#   perl - SOCKET SCRIPT_FILENAME ASK TIMEOUT [AGAIN UNTIL SECONDS]
#
# Sends one request for SCRIPT_FILENAME with the parameter FORGE_PHP_REFRESH=ASK.
# With AGAIN, it then sends FORGE_PHP_REFRESH=AGAIN every 10 ms until an answer
# contains UNTIL or SECONDS have passed (a failure there only ends the loop).
# Core modules only: perl-base is Essential on Debian and Ubuntu, so it is there
# even where cgi-fcgi, cachetool or the PHP CLI are not.
#
# Prints every answer (CGI headers and body) on stdout and what PHP-FPM sent on
# its stderr stream on stderr. Exit status of the first request: 0 answered;
# 10 no such socket; 11 permission denied; 12 connection refused; 13 other
# connect error; 14 no answer in time; 15 not a FastCGI answer; 16 not a socket.
use strict;
use warnings;
use Errno;
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);

my ($path, $script, $ask, $timeout, $again, $until, $seconds) = @ARGV;
binmode STDOUT;
binmode STDERR;

# A record of request 1: version, type, id, content length, padding, reserved.
sub record {
    my ($type, $content) = @_;
    return pack('CCnnCx', 1, $type, 1, length $content, 0) . $content;
}

sub pair {
    my ($name, $value) = @_;
    my $len = join '', map { $_ < 128 ? pack('C', $_) : pack('N', $_ | 0x80000000) }
        length $name, length $value;
    return $len . $name . $value;
}

sub params {
    my ($value) = @_;
    (my $name = $script) =~ s{.*/}{/};
    (my $root = $script) =~ s{/[^/]*$}{};
    my %p = (
        SCRIPT_FILENAME   => $script,
        SCRIPT_NAME       => $name,
        REQUEST_URI       => $name,
        DOCUMENT_URI      => $name,
        DOCUMENT_ROOT     => $root,
        REQUEST_METHOD    => 'GET',
        QUERY_STRING      => '',
        CONTENT_LENGTH    => '0',
        SERVER_PROTOCOL   => 'HTTP/1.1',
        GATEWAY_INTERFACE => 'CGI/1.1',
        SERVER_SOFTWARE   => 'forge-ci',
        SERVER_NAME       => 'localhost',
        REMOTE_ADDR       => '127.0.0.1',
        FORGE_PHP_REFRESH => $value,
    );
    return join '', map { pair($_, $p{$_}) } sort keys %p;
}

# One request. Returns (0, stdout) or (exit status, why).
sub request {
    my ($value) = @_;
    return (16, 'not a socket') if -e $path && !-S _;
    socket(my $sock, AF_UNIX, SOCK_STREAM, 0) or return (13, "socket: $!");
    if (!connect($sock, pack_sockaddr_un($path))) {
        return ($!{ENOENT} ? 10 : $!{EACCES} ? 11 : $!{ECONNREFUSED} ? 12 : 13, "connect: $!");
    }
    binmode $sock;
    # BEGIN_REQUEST (responder, close when done), PARAMS, end of PARAMS, empty STDIN.
    my $out = record(1, pack('nCx5', 1, 0)) . record(4, params($value)) . record(4, '')
        . record(5, '');
    while (length $out) {
        my $n = syswrite($sock, $out);
        return (15, "write: $!") unless defined $n;
        substr($out, 0, $n) = '';
    }
    my $answer = '';
    while (1) {
        my ($header, $why) = take($sock, 8);
        return (15, $why) unless defined $header;
        my ($version, $type, $id, $len, $pad) = unpack('CCnnC', $header);
        return (15, 'the answer is not FastCGI') unless $version == 1;
        my ($content, $more) = take($sock, $len + $pad);
        return (15, $more) unless defined $content;
        $content = substr($content, 0, $len);
        if ($type == 6) {
            $answer .= $content;
        } elsif ($type == 7) {
            print STDERR $content;
        } elsif ($type == 3) {
            return (0, $answer);
        }
    }
}

sub take {
    my ($sock, $want) = @_;
    my $buf = '';
    while (length $buf < $want) {
        my $n = sysread($sock, $buf, $want - length $buf, length $buf);
        return (undef, defined $n ? 'the connection closed before the answer ended'
                                  : "read: $!") unless $n;
    }
    return ($buf, '');
}

$SIG{ALRM} = sub { print STDERR "forge-fastcgi: no answer within ${timeout}s\n"; exit 14 };
alarm $timeout;
my ($status, $answer) = request($ask);
if ($status) {
    print STDERR "forge-fastcgi: $answer\n";
    exit $status;
}
print STDOUT $answer;
exit 0 unless defined $again;

# Sleeps of 10 ms by select (Time::HiRes is not in perl-base); whole seconds bound it.
my $deadline = time + $seconds;
alarm $seconds + $timeout;
while (time <= $deadline) {
    ($status, $answer) = request($again);
    last if $status;
    print STDOUT $answer;
    last if index($answer, $until) >= 0;
    select(undef, undef, undef, 0.01);
}
exit 0;
