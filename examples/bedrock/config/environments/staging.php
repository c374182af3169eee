<?php
/** Staging: like production, but keep search engines away. */

define('DISALLOW_INDEXING', true);
